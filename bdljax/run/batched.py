"""Many runs of plans of one structure as one compiled program: splits and grid points as a batch axis.

A benchmark trains the same method on many splits, and on many grid points
of a validation grid. When their plans have one structure (the same shapes
and the same static settings: schedule, sample count, stages), the runner
vmaps them: ``init``, every epoch and ``sample`` of all runs are one compiled
call each, and epochs run without a host round trip.

The caller gives ``make_plan(hyperparameters, data) -> Plan``. The runner
builds the *reference* plan concretely (run 0), which fixes the structure and
must have :class:`~bdljax.run.plan.Epochs` schedules (chains run one by one).
Inside the compiled program ``make_plan`` is called again with the batched
``hyperparameters`` as traced scalars and the reference data, so every run's
transform closes over its own values (prior scale, learning rate) while one
compilation serves them all. The data of each run enter the program as
arguments: a transform never closes over its training data. Keys are used
exactly as :func:`bdljax.run.runner.execute` uses them, so each run gives the
numbers it would give alone (tested). ``finish`` runs per run, on its own
concrete plan.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from bdljax.run import training
from bdljax.run.plan import Epochs, Fitted, Plan
from bdljax.run.runner import RunOptions, nonfinite_diagnostics

MakePlan = Callable[[Mapping[str, Any], Tuple[Any, Any]], Plan]


def batchable(plan: Plan) -> bool:
    """Whether runs of this plan can share one vmapped program: every stage trains by epochs."""
    return isinstance(plan.schedule, Epochs) and (plan.before is None or batchable(plan.before))


def structure(plan: Plan) -> Tuple:
    """What runs batched together must share: the name, schedules, sample counts and data shapes of every stage."""
    stage = (plan.name, tuple(plan.schedule), plan.num_samples, np.shape(plan.data[0]), np.shape(plan.data[1]),
             plan.transform.batch_streams)
    return stage + (structure(plan.before) if plan.before is not None else ())


def _take(tree, index):
    return jax.tree.map(lambda leaf: leaf[index], tree)


def _stage(plan: Plan, depth: int) -> Plan:
    """The stage ``depth`` levels before ``plan`` (0: the plan itself)."""
    for _ in range(depth):
        plan = plan.before
    return plan


def _stages(plan: Plan) -> int:
    return 1 if plan.before is None else 1 + _stages(plan.before)


def execute_batched(make_plan: MakePlan, hyperparameters: Mapping[str, Sequence[float]], data: Sequence[Tuple[Any, Any]],
                    keys: jax.Array, options: RunOptions = RunOptions(), chunk: int = 0) -> List[Fitted]:
    """Run R plans ``make_plan({k: hyperparameters[k][r]}, data[r])`` with ``keys[r]`` as one program.

    Args:
      make_plan: builds one run's plan; it must accept traced scalars for the
        keys of ``hyperparameters`` (the caller chooses which values to trace).
      hyperparameters: name -> R floats; may be empty (then only data and keys differ).
      data: R training sets ``(x, y)`` of one shape.
      keys: ``(R,)`` PRNG keys.
      chunk: runs per compiled call (0: all at once; 1: one at a time through the same program).

    Returns:
      one :class:`Fitted` per run, with per-epoch ``train`` records and non-finite counts.
    """
    num_runs = int(keys.shape[0])
    if len(data) != num_runs or any(len(values) != num_runs for values in hyperparameters.values()):
        raise ValueError(f"need one data set and one value of every hyperparameter per key ({num_runs} keys)")
    values = {name: jnp.asarray(np.asarray(v, np.float32)) for name, v in hyperparameters.items()}
    reference = make_plan({name: float(v[0]) for name, v in hyperparameters.items()}, data[0])
    if not batchable(reference):
        raise ValueError(f"{reference.name}: only plans trained by epochs can be batched; run chains one by one "
                         "with bdljax.run.runner.execute")
    shapes = {(np.shape(x), np.shape(y)) for x, y in data}
    if len(shapes) != 1:
        raise ValueError(f"batched runs need training data of one shape, got {sorted(shapes)}")
    xs = jnp.stack([jnp.asarray(x) for x, _ in data])
    ys = jnp.stack([jnp.asarray(y) for _, y in data])
    program = _Program(make_plan, reference)
    chunk = num_runs if chunk <= 0 else min(chunk, num_runs)
    fitted: List[Fitted] = []
    for start in range(0, num_runs, chunk):
        part = slice(start, min(start + chunk, num_runs))
        fitted.extend(program.run({k: v[part] for k, v in values.items()}, xs[part], ys[part], keys[part]))
    results = []
    for r, result in enumerate(fitted):
        plan = make_plan({name: float(v[r]) for name, v in hyperparameters.items()}, data[r])
        result = result._replace(apply=plan.apply, likelihood=plan.likelihood)
        if options.logger is not None:
            for record in result.history:
                options.logger.log({**(options.log_fields or {}), **record})
        results.append(plan.finish(result, plan) if plan.finish is not None else result)
    return results


class _Program:
    """The compiled init / epoch / sample functions of every stage of one plan structure."""

    def __init__(self, make_plan: MakePlan, reference: Plan):
        self.make_plan, self.reference = make_plan, reference
        self.reference_data = tuple(jnp.asarray(a) for a in reference.data)
        self.num_stages = _stages(reference)
        self.init = jax.jit(jax.vmap(self._init_one, in_axes=(0, 0, 0, None)), static_argnums=3)
        self.epoch = jax.jit(jax.vmap(self._epoch_one, in_axes=(0, 0, 0, 0, 0, None)), static_argnums=5)
        self.sample = jax.jit(jax.vmap(self._sample_one, in_axes=(0, 0, 0, None)), static_argnums=3)
        self.start_from = jax.jit(jax.vmap(self._start_from_one, in_axes=(0, 0, 0, 0, None)), static_argnums=4)

    def _plan(self, values, depth: int) -> Plan:
        return _stage(self.make_plan(values, self.reference_data), depth)

    def _init_one(self, values, key, params, depth):
        init_key, fit_key, sample_key = jax.random.split(key, 3)
        plan = self._plan(values, depth)
        return plan.transform.init(init_key, plan.init_params if params is None else params), fit_key, sample_key

    def _start_from_one(self, values, key, first_samples, first_state, depth):
        """The initial parameters of stage ``depth`` from its first stage's result, and its state."""
        plan = self._plan(values, depth)
        first = Fitted(first_samples, None, None, [], {}, first_state)
        init_key, fit_key, sample_key = jax.random.split(key, 3)
        return plan.transform.init(init_key, plan.init_params(first)), fit_key, sample_key

    def _epoch_one(self, values, state, x, y, key, depth):
        plan = self._plan(values, depth)
        return training.epoch_steps(plan.transform, state, x, y, key, plan.schedule.batch_size)

    def _sample_one(self, values, state, key, depth):
        plan = self._plan(values, depth)
        return plan.transform.sample(state, key, plan.num_samples)

    def stage_keys(self, keys, depth: int):
        """Each run's key for stage ``depth``, as :func:`bdljax.run.runner.execute` derives it: a plan with a first
        stage splits its key into (first stage, itself)."""
        for _ in range(depth):
            keys = jax.vmap(lambda k: jax.random.split(k)[0])(keys)
        if _stage(self.reference, depth).before is not None:
            keys = jax.vmap(lambda k: jax.random.split(k)[1])(keys)
        return keys

    def run(self, values, xs, ys, keys) -> List[Fitted]:
        num_runs = keys.shape[0]
        history: List[List[Dict[str, Any]]] = [[] for _ in range(num_runs)]
        first = None
        for depth in reversed(range(self.num_stages)):  # the first stage first
            stage = _stage(self.reference, depth)
            stage_keys = self.stage_keys(keys, depth)
            if first is None:
                states, fit_keys, sample_keys = self.init(values, stage_keys, None, depth)
            else:
                states, fit_keys, sample_keys = self.start_from(values, stage_keys, *first, depth)
            infos = []
            for epoch in range(1, stage.schedule.num_epochs + 1):
                epoch_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(fit_keys, epoch)
                states, info = self.epoch(values, states, xs, ys, epoch_keys, depth)
                infos.append(info)  # stays on the device: no host round trip per epoch
            samples = self.sample(values, states, sample_keys, depth)
            infos = jax.device_get(infos)
            fields = {"stage": stage.name} if depth > 0 else {}
            for r in range(num_runs):
                history[r].extend({**fields, "epoch": e + 1, "split": "train", **training.summarise_infos(_take(i, r))}
                                  for e, i in enumerate(infos))
            first = (samples, states)
        samples, states = first
        return [Fitted(_take(samples, r), None, None, history[r],
                       {"execution": {"steps_per_call": None, "members": "vmap", "runs": "vmap"},
                        **nonfinite_diagnostics(_take(states, r))}, _take(states, r))
                for r in range(num_runs)]
