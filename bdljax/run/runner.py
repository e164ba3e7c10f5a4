"""One runner for every plan: :func:`execute`.

A recipe says what to run (:class:`~bdljax.run.plan.Plan`); the runner owns
everything methods share: the first stage and the key it gets, minibatch
epochs (:func:`bdljax.run.training.fit`) or compiled chain chunks
(:mod:`bdljax.run.chains`), periodic evaluation of the predictive, progress
bars, logging, the execution choice for this backend
(:mod:`bdljax.run.execution`) and the count of undone non-finite steps.
Plumbing travels as one :class:`RunOptions` value.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from bdljax.methods import wrappers
from bdljax.run import execution as execution_choice
from bdljax.run import chains, predictive, training
from bdljax.run.options import RunOptions
from bdljax.run.plan import Chains, Epochs, Fitted, Plan


def execute(plan: Plan, key: jax.Array, options: RunOptions = RunOptions()) -> Fitted:
    """Run ``plan`` with ``key``: its first stage (if any), then its schedule, then its finishing step.

    With a first stage the key is split ``(first, main)``; the first stage's
    records carry ``stage=<its name>`` and its diagnostics come back prefixed
    with its name (``map_pretrain_nonfinite_steps``).
    """
    history, diagnostics = [], {}
    init_params = plan.init_params
    if plan.before is not None:
        before_key, key = jax.random.split(key)
        first = execute(plan.before, before_key, options._replace(eval_every=0).with_fields(stage=plan.before.name))
        init_params = plan.init_params(first)
        history.extend(first.history)
        diagnostics.update({f"{plan.before.name}_{name}": value for name, value in first.diagnostics.items()})
    if isinstance(plan.schedule, Chains):
        fitted = chains.execute(plan, key, init_params, options)
    elif isinstance(plan.schedule, Epochs):
        fitted = _execute_epochs(plan, key, init_params, options)
    else:
        raise TypeError(f"plan.schedule must be Epochs or Chains, got {type(plan.schedule).__name__}")
    fitted = fitted._replace(history=history + fitted.history, diagnostics={**diagnostics, **fitted.diagnostics})
    return plan.finish(fitted, plan) if plan.finish is not None else fitted


def resolve_execution(plan: Plan, options: RunOptions, init_params: Any) -> execution_choice.Execution:
    """The options' execution, or the backend's best for this plan's network: one posterior sample evaluated
    abstractly (nothing is computed) tells whether it convolves."""
    if options.execution is not None:
        return options.execution.check()

    def one_sample(key):
        state = plan.transform.init(key, init_params)
        return jax.tree.map(lambda leaf: leaf[0], plan.transform.sample(state, key, plan.num_samples))

    sample = jax.eval_shape(one_sample, jax.random.key(0))
    x = jax.ShapeDtypeStruct((1, *np.shape(plan.data[0])[1:]), jnp.result_type(plan.data[0]))
    return execution_choice.choose(plan.apply, sample, x)


def _execute_epochs(plan: Plan, key: jax.Array, init_params: Any, options: RunOptions,
                    execution: Optional[execution_choice.Execution] = None) -> Fitted:
    execution = execution or resolve_execution(plan, options, init_params)
    transform = plan.transform
    if execution.members == "sequential" and transform.member is not None:
        return _execute_members_in_turn(plan, key, init_params, options, execution)
    init_key, fit_key, sample_key = jax.random.split(key, 3)
    state = initial_state(transform, init_key, init_params)
    evaluate = _evaluator(plan, sample_key, options)
    result = training.fit(
        transform, state, plan.data, key=fit_key, num_epochs=plan.schedule.num_epochs,
        batch_size=plan.schedule.batch_size, evaluate=evaluate, eval_every=options.eval_every if evaluate else 0,
        logger=options.logger, log_fields=options.log_fields, progress=options.progress, description=plan.name,
        steps_per_call=execution.steps_per_call,
    )
    samples = transform.sample(result.state, sample_key, plan.num_samples)
    diagnostics = {"execution": execution._asdict(), **nonfinite_diagnostics(result.state)}
    return Fitted(samples, plan.apply, plan.likelihood, result.history, diagnostics, result.state)


def _execute_members_in_turn(plan, key, init_params, options, execution) -> Fitted:
    """An ensemble's members one after another: member k runs as its own plan with key ``split(key, K)[k]``,
    so it equals an independent fit of the member; one compiled member program serves them all."""
    member, num_members = plan.transform.member, plan.transform.batch_streams
    if plan.num_samples % num_members:
        raise ValueError(f"num_samples={plan.num_samples} must be a multiple of the {num_members} members")
    if options.eval_every and options.eval_data is not None:
        raise ValueError("periodic evaluation needs every member at once: run the members vmapped "
                         "(RunOptions(execution=Execution(members='vmap'))) or evaluate the returned Fitted")
    member_plan = plan._replace(transform=member, num_samples=plan.num_samples // num_members, before=None,
                                finish=None)
    fits = [_execute_epochs(member_plan, member_key, init_params, options.with_fields(member=index), execution)
            for index, member_key in enumerate(jax.random.split(key, num_members))]
    samples = jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *[f.samples for f in fits])
    state = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[f.state for f in fits])
    history = [record for f in fits for record in f.history]
    diagnostics = {"execution": execution._asdict(), **nonfinite_diagnostics(state)}
    return Fitted(samples, plan.apply, plan.likelihood, history, diagnostics, state)


def _evaluator(plan: Plan, sample_key, options: RunOptions) -> Optional[Callable]:
    if options.eval_data is None or not options.eval_every:
        return None
    x_eval, y_eval = options.eval_data

    def evaluate(state) -> Dict[str, Any]:
        samples = plan.transform.sample(state, sample_key, plan.num_samples)
        outputs = predictive.predictive_outputs(plan.apply, samples, x_eval)
        return predictive.evaluate(plan.likelihood, outputs, y_eval)

    return evaluate


def initial_state(transform, key: jax.Array, init_params: Any):
    """``transform.init(key, init_params)`` as one compiled call, compiled once per transform and initialiser.

    Refitting the same transform (ensemble members in turn, splits, grid
    points) never recompiles it. ``init_params`` is a pytree (an argument of
    the compiled function) or an initialiser ``key -> params``.
    """
    if callable(init_params):
        return _compiled_init(transform, init_params)(key)
    return _compiled_init(transform, None)(key, init_params)


@functools.lru_cache(maxsize=64)
def _compiled_init(transform, initialiser: Optional[Callable]) -> Callable:
    if initialiser is None:
        return jax.jit(transform.init)
    return jax.jit(lambda key: transform.init(key, initialiser))


def nonfinite_diagnostics(state) -> Dict[str, int]:
    """``{"nonfinite_steps": n}`` when the state counts undone non-finite steps (summed over members and
    chains), else ``{}``: divergences are reported, never silently averaged in."""
    count = wrappers.num_nonfinite(state)
    return {} if count is None else {"nonfinite_steps": count}
