"""Markov chains in compiled chunks: the runner's path for :class:`~bdljax.run.plan.Chains` plans (HMC, NUTS).

Several chains run as a leading axis — vmapped, or mapped one after another
inside the compiled step (:func:`resolve_chain_method`) — each with its own
key and initialisation (random, or given parameters such as MAP solutions),
in compiled ``lax.scan`` chunks (one compilation per chunk length). Draws are
kept stacked ``(chains, draws, ...)`` on the host and/or streamed into a
:class:`bdljax.run.predictive.RunningPredictive` (the running ensemble average
of bnn_hmc), and the log posterior, parameter-leaf norms and predictions at a
few points are traced for :mod:`bdljax.evaluate.diagnostics`. Transition t of
chain c uses ``fold_in(run_key_c, t)`` whatever the chunking or the number of
chains, so a chain run alone gives the draws it gives in a batch.

The chain's transform is full batch (its data bound at build time, as
:func:`bdljax.methods.hmc.build` does): ``update`` gets ``batch=None`` and
returns the transition's info (the fields of :data:`INFO_FIELDS`),
``sample(state, key, 1)`` is the chain's current draw, and the state carries
the step size ``step_size`` in force (reported after the run).
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from bdljax.core import tree
from bdljax.core.likelihoods import Likelihood
from bdljax.core.transform import Transform
from bdljax.evaluate import classification, regression
from bdljax.evaluate import diagnostics as diag
from bdljax.run import predictive
from bdljax.run.options import RunOptions
from bdljax.run.plan import Chains, Fitted, Plan

Params = Any
# What one transition reports (bdljax.methods.hmc.TransitionInfo), stacked (C, T) per phase after the run.
INFO_FIELDS = ("log_density", "acceptance_rate", "is_divergent", "step_size", "num_integration_steps", "is_warmup")
CHAIN_METHODS = ("auto", "vectorized", "sequential")
NUM_TRACE_POINTS = 8  # inputs whose predictions are traced per draw (R̂/ESS of the predictive)


class ChainRun(NamedTuple):
    """What :func:`sample_chains` returns.

    Attributes:
      samples: stacked draws ``(chains, draws, ...)`` (host numpy leaves), or
        ``None`` with ``keep_samples=False``.
      traces: ``log_density`` ``(C, S)``, ``param_norms`` ``(C, S, leaves)`` and,
        with ``trace_points``, ``predictions`` ``(C, S, K)``.
      warmup_infos, infos: transition info fields ``(C, T)`` for the
        warm-up and the kept phase (every transition, thinned ones included).
      running: the streamed :class:`~bdljax.run.predictive.RunningPredictive` on
        ``options.eval_data`` (``None`` without it).
      state: final chain states, leading axis C.
      history: one record per chunk (and per evaluation).
      diagnostics: see :func:`bdljax.evaluate.diagnostics.summarise` and
        :func:`bdljax.evaluate.diagnostics.sampler_summary`.
    """

    samples: Optional[Params]
    traces: Dict[str, np.ndarray]
    warmup_infos: Dict[str, np.ndarray]
    infos: Dict[str, np.ndarray]
    running: Optional[predictive.RunningPredictive]
    state: Any
    history: List[Dict[str, Any]]
    diagnostics: Dict[str, Any]


def execute(plan: Plan, key: jax.Array, init_params: Any, options: RunOptions) -> Fitted:
    """The runner's path for a :class:`Chains` plan: ``num_chains`` chains, chain c with key ``split(key, C)[c]``.

    ``Fitted.samples`` holds the ``C·S`` draws chain-major; ``Fitted.state``
    is the :class:`ChainRun` (traces, per-transition infos, running predictive).
    Predictions are traced at the first :data:`NUM_TRACE_POINTS` inputs of
    ``options.eval_data`` (of the training data without it).

    A plan without a first stage still splits off the key a first stage would
    have had (``split(key)[1]``; the runner splits only when ``before`` is
    set): a chain's key is then the same whether it starts from the
    initialiser or from a MAP solution, and the draws equal those of the
    recipes before the runner, which always split ``(init_key, run_key)``.
    """
    if plan.before is None:
        key = jax.random.split(key)[1]
    points = np.asarray(plan.data[0] if options.eval_data is None else options.eval_data[0])[:NUM_TRACE_POINTS]
    run = sample_chains(plan, jax.random.split(key, plan.schedule.num_chains), init_params, options,
                        trace_points=points)
    diagnostics = {"algorithm": plan.name, **run.diagnostics}
    if options.logger is not None:
        options.logger.log({**(options.log_fields or {}), "split": "diagnostics", **diagnostics})
    return Fitted(flatten_chains(run.samples), plan.apply, plan.likelihood, run.history, diagnostics, run)


def sample_chains(plan: Plan, chain_keys: jax.Array, init_params: Any, options: RunOptions = RunOptions(), *,
                  trace_points: Optional[Any] = None, keep_samples: bool = True, diagnose: bool = True,
                  warn: bool = True) -> ChainRun:
    """Run ``len(chain_keys)`` chains of ``plan.transform``: warm-up, then ``plan.schedule.num_draws`` draws each.

    Every chunk of ``chunk_size`` draws (``chunk_size · thinning``
    transitions; ``chunk_size`` transitions in warm-up) is one jitted
    ``lax.scan`` of the transition of all chains, so the host sees the chains
    once per chunk (progress, logs) and device memory holds one chunk of
    draws. Chunk functions are cached per (transform, chunk length, ...): a
    run compiles once per distinct chunk length, and a second run of the
    same transform not at all.

    Args:
      plan: the transform (one chain's full-batch transition), its schedule
        (:class:`Chains`: warm-up, draws, thinning, chunk size, chain method,
        float64), and ``apply``/``likelihood`` for the traces and the predictive.
      chain_keys: ``(C,)`` keys; chain c depends only on ``chain_keys[c]`` and its initialisation.
      init_params: ``key -> params`` (a fresh initialisation per chain), or a
        pytree stacked with a leading axis of C (e.g. C MAP solutions).
      options: ``eval_data`` is streamed into a running predictive (scored every ``eval_every`` kept chunks
        and after the last); logger, log fields and progress as for every run.
      trace_points: a few inputs ``(K, ...)`` whose predictions are traced per draw for R̂/ESS of the predictive.
      keep_samples: keep every draw on the host as ``(C, S, ...)``; ``False`` keeps memory constant.
      diagnose: compute R̂ and ESS of the traces; the sampler summary is always computed.
      warn: raise :class:`bdljax.evaluate.diagnostics.ConvergenceWarning` for what does not converge (the
        summary's ``warnings`` list them either way).
    """
    schedule, num_chains = plan.schedule, int(chain_keys.shape[0])
    chain_method = resolve_chain_method(schedule.chain_method, num_chains)
    _check(plan, num_chains, init_params, trace_points, options)
    keys = jax.vmap(lambda k: jax.random.split(k, 2))(chain_keys)
    init_keys, run_keys = keys[:, 0], keys[:, 1]
    log = _Log(options, total=schedule.num_warmup + schedule.num_draws * schedule.thinning)
    parts = {"warmup": [], "sampling": [], "emitted": []}  # host copies of every chunk's infos and emissions
    with jax.enable_x64(True) if schedule.float64 else contextlib.nullcontext():
        states, sample_dtype, watch, running = _start(plan, init_keys, init_params, chain_method, trace_points,
                                                      options.eval_data)
        step = 0
        for phase, length, group, evaluate in _calls(schedule, options.eval_every if running is not None else 0):
            start = time.perf_counter()
            chunk = _chunk_fn(plan.transform, length, group, keep_samples, sample_dtype, plan.apply,
                              plan.likelihood, chain_method)
            states, running, emitted, infos = chunk(states, run_keys, np.int32(step), running, phase == "sampling",
                                                    *watch)
            step += length * group
            parts[phase].append(_host(infos))
            if phase == "sampling":  # what warm-up emits is dropped without leaving the device
                parts["emitted"].append(_host(emitted))
            log.chunk(phase, step, parts[phase][-1], time.perf_counter() - start, length * group)
            if evaluate:
                num_kept = num_chains * sum(part["log_density"].shape[0] for part in parts["emitted"])
                log.record({"step": step, "split": "eval", "draws": num_kept,
                            **running_metrics(plan.likelihood, running, options.eval_data[1])})
    log.close()
    samples, traces = _join_draws(parts["emitted"])
    warmup_infos, infos = _stack_infos(parts["warmup"]), _stack_infos(parts["sampling"])
    summary = diag.sampler_summary(infos["acceptance_rate"], infos["is_divergent"], np.asarray(states.step_size),
                                   infos["num_integration_steps"], warmup_infos["is_divergent"])
    if diagnose:
        summary.update(diag.summarise(traces))
    summary.update({"chain_method": chain_method, "num_chains": num_chains, "num_draws": int(schedule.num_draws),
                    "num_warmup": schedule.num_warmup, "thinning": schedule.thinning, "float64": schedule.float64})
    summary["warnings"] = diag.check(summary, num_chains, warn=warn)
    return ChainRun(samples, traces, warmup_infos, infos, running, states, log.history, summary)


def resolve_chain_method(chain_method: str, num_chains: int) -> str:
    """``auto``: ``vectorized`` (``jax.vmap``) for several chains on an accelerator, else ``sequential``.

    XLA's CPU backend runs a vmapped matrix product as a batched
    ``dot_general``, which is slower than the plain products one chain at a
    time: in scripts/bench_hmc.py (session 2, 2 shared CPU cores, single-threaded
    XLA) 4 chains gave 2304 gradients/s vmapped against 2948 mapped one after
    another, 16 chains 1900 against 2875, and a batch of one chain 1934 against
    2271; with XLA's default threading on the same loaded machine sequential
    won too (16 chains: 1317 against 6342). So on CPU chains are mapped one
    after another inside the compiled step (``lax.map``); on GPU/TPU the
    batched products fill the device and ``vectorized`` is the default for
    several chains. State layout, keys and draws are the same either way.
    """
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"unknown chain_method {chain_method!r}; choose one of {CHAIN_METHODS}")
    if chain_method == "auto":
        return "vectorized" if num_chains > 1 and jax.default_backend() != "cpu" else "sequential"
    return chain_method


def _check(plan: Plan, num_chains: int, init_params: Any, trace_points, options: RunOptions) -> None:
    schedule = plan.schedule
    if schedule.num_draws < 4 or schedule.chunk_size < 1:
        # 4: the split-chain R̂/ESS reported after the run need two halves of two draws each.
        raise ValueError(f"need num_draws >= 4 (per chain, for split R-hat) and chunk_size >= 1, got "
                         f"{schedule.num_draws} and {schedule.chunk_size}")
    if (trace_points is not None or options.eval_data is not None) and plan.apply is None:
        raise ValueError("trace_points and eval_data need the network's apply")
    if options.eval_data is not None and plan.likelihood is None:
        raise ValueError("eval_data needs the likelihood")
    if not callable(init_params):
        leading = {leaf.shape[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(init_params)}
        if leading != {num_chains}:
            raise ValueError(
                f"init_params must be an initialiser key -> params or params stacked with a leading axis of "
                f"{num_chains} chains (bdljax.core.tree.repeat(params, {num_chains}) for one shared start); "
                f"got leading sizes {sorted(map(str, leading))}")


class _Watch(NamedTuple):
    """What the chunks compute besides transitions: traces at ``points``, a streamed predictive on ``(x, y)``."""

    points: Optional[jax.Array]
    x: Optional[jax.Array]
    y: Optional[jax.Array]


def _start(plan: Plan, init_keys, init_params, chain_method: str, trace_points, eval_data):
    """Initial chain states, the draws' dtype (float64 chains hand back float32), what to watch, and an empty
    running predictive."""
    if callable(init_params):
        states = _init_chains_fn(plan.transform, init_params, chain_method)(init_keys)
    else:
        states = _init_chains_fn(plan.transform, None, chain_method)(init_keys, init_params)
    draw = jax.eval_shape(jax.vmap(functools.partial(_current_draw, plan.transform)), states, init_keys)
    dtype = jax.tree.leaves(draw)[0].dtype
    sample_dtype = jnp.float32 if dtype == jnp.float64 else dtype
    points = None if trace_points is None else tree.cast_floats(jnp.asarray(trace_points), sample_dtype)
    running, x_pred, y_pred = None, None, None
    if eval_data is not None:
        x_pred, y_pred = jnp.asarray(eval_data[0]), jnp.asarray(eval_data[1])
        one_draw = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape[1:], sample_dtype), draw)
        example = jax.eval_shape(plan.apply, one_draw, x_pred[:1])
        num_classes = example.shape[-1] if plan.likelihood.kind == "classification" else 0
        # Once, on the host, before any chunk streams them (inside the compiled chunks they are traced).
        plan.likelihood.check_targets(np.asarray(eval_data[1]), tuple(example.shape[1:]))
        running = predictive.running_init(plan.likelihood, x_pred.shape[0], num_classes)
    return states, sample_dtype, _Watch(points, x_pred, y_pred), running


def _calls(schedule: Chains, eval_every: int):
    """The compiled calls of a run: ``(phase, draws, transitions per draw, evaluate after it)`` each.

    Warm-up emits one "draw" per transition; the running predictive is scored
    after every ``eval_every``-th kept chunk and after the last.
    """
    warmup = [("warmup", length, 1, False) for length in _chunks(schedule.num_warmup, schedule.chunk_size)]
    draws = _chunks(schedule.num_draws, schedule.chunk_size)
    sampling = [("sampling", length, schedule.thinning,
                 bool(eval_every) and (index % eval_every == 0 or index == len(draws)))
                for index, length in enumerate(draws, start=1)]
    return warmup + sampling


def _chunks(total: int, size: int) -> List[int]:
    return [size] * (total // size) + ([total % size] if total % size else [])


def _transition_keys(run_keys, start, length, thinning=1):
    """Key of transition t of chain c: fold_in(run_key_c, t), whatever the chunking or the number of chains."""
    steps = start + jnp.arange(length * thinning, dtype=jnp.int32)
    keys = jax.vmap(lambda k: jax.vmap(lambda t: jax.random.fold_in(k, t))(steps))(run_keys)  # (C, T)
    keys = jnp.swapaxes(keys, 0, 1)  # (T, C)
    return keys.reshape((length, thinning, *keys.shape[1:])) if thinning > 1 else keys


def _over_chains(fn: Callable, chain_method: str) -> Callable:
    """``fn`` of one chain's arguments → the same over a leading chain axis of every argument."""
    if chain_method == "vectorized":
        return jax.vmap(fn)
    return lambda *args: jax.lax.map(lambda chain_args: fn(*chain_args), args)


def _current_draw(transform: Transform, state, key) -> Params:
    """The chain's draw at ``state``: ``transform.sample(state, key, 1)`` without its sample axis."""
    return jax.tree.map(lambda leaf: leaf[0], transform.sample(state, key, 1))


@functools.lru_cache(maxsize=64)
def _init_chains_fn(transform: Transform, init_fn: Optional[Callable], chain_method: str):
    if init_fn is None:
        return jax.jit(_over_chains(transform.init, chain_method))
    return jax.jit(_over_chains(lambda key: transform.init(key, init_fn), chain_method))


@functools.lru_cache(maxsize=64)
def _chunk_fn(transform: Transform, length: int, group: int, keep_samples: bool, sample_dtype,
              apply: Optional[Callable], likelihood: Optional[Likelihood], chain_method: str):
    """``length`` emissions, each after ``group`` transitions of every chain, as one jitted scan.

    Warm-up (group 1, ``accumulate`` False) and sampling (group = thinning,
    ``accumulate`` True) share this function, so with thinning 1 a whole run
    compiles once per chunk length. What warm-up emits is dropped on the host.
    """
    # The transform is full batch (its data is bound at build time), so every update gets batch=None.
    step_chains = _over_chains(lambda state, key: transform.update(state, None, key), chain_method)
    current_draws = _over_chains(functools.partial(_current_draw, transform), chain_method)

    def chunk(states, run_keys, start, running, accumulate, points, x_pred, y_pred):
        keys = _transition_keys(run_keys, start, length, group)
        summaries = _over_chains(lambda p: diag.draw_summaries(apply, likelihood, p, points), chain_method)

        def one_draw(carry, draw_keys):
            states, running = carry
            if group > 1:
                states, infos = jax.lax.scan(step_chains, states, draw_keys)
                last_keys, log_density = draw_keys[-1], infos.log_density[-1]
            else:
                states, infos = step_chains(states, draw_keys)
                last_keys, log_density = draw_keys, infos.log_density
            position = tree.cast_floats(current_draws(states, last_keys), sample_dtype)
            emitted = {"log_density": log_density, **summaries(position)}
            if keep_samples:
                emitted["position"] = position
            if running is not None:
                def add(running):
                    outputs = _over_chains(lambda p: apply(p, x_pred), chain_method)(position)  # (C, N, ...)
                    return predictive.running_update(likelihood, running, outputs, y_pred)

                # `accumulate` is one flag for all chains (not vmapped), so this is a real branch: warm-up
                # pays nothing for the predictive.
                running = jax.lax.cond(accumulate, add, lambda r: r, running)
            return (states, running), (emitted, infos)

        (states, running), (emitted, infos) = jax.lax.scan(one_draw, (states, running), keys)
        return states, running, emitted, infos

    return jax.jit(chunk)


def _host(values):
    return jax.tree.map(np.asarray, values)


def _stack_infos(parts: List[Any]) -> Dict[str, np.ndarray]:
    if not parts:
        return {field: np.zeros((0, 0)) for field in INFO_FIELDS}
    fields = {}
    for field in INFO_FIELDS:
        # (length[, thinning], C) per chunk -> (T, C) -> (C, T)
        values = np.concatenate([np.reshape(getattr(p, field), (-1, np.shape(getattr(p, field))[-1])) for p in parts])
        fields[field] = values.T
    return fields


def _join_draws(emitted_parts: List[Dict[str, Any]]):
    """The sampling chunks' emissions joined into ``(C, S, ...)`` draws (``None`` when not kept) and traces."""

    def joined(leaves):  # (T, C, ...) chunks -> (C, T, ...)
        return np.swapaxes(np.concatenate(leaves), 0, 1)

    traces = {name: joined([part[name] for part in emitted_parts])
              for name in ("log_density", "param_norms", "predictions") if name in emitted_parts[0]}
    samples = None
    if "position" in emitted_parts[0]:
        samples = jax.tree.map(lambda *leaves: joined(leaves), *[part["position"] for part in emitted_parts])
    return samples, traces


def flatten_chains(samples: Params) -> Params:
    """``(C, S, ...)`` draws → ``(C·S, ...)`` device arrays, chain-major (the sample axis of the predictive)."""
    return jax.tree.map(lambda leaf: jnp.asarray(leaf.reshape((-1, *leaf.shape[2:]))), samples)


def running_metrics(likelihood: Likelihood, running: predictive.RunningPredictive, y) -> Dict[str, float]:
    """Predictive metrics from streamed accumulators: RMSE and test log-likelihood, or accuracy and NLL."""
    log_density = predictive.running_log_predictive_density(running)
    mean, _ = predictive.running_moments(running)
    if likelihood.kind == "regression":
        return {"rmse": float(regression.rmse(mean, jnp.asarray(y))), "test_ll": float(jnp.mean(log_density))}
    return {"accuracy": float(classification.accuracy(mean, jnp.asarray(y))), "nll": float(-jnp.mean(log_density))}


def _chunk_record(phase: str, step: int, infos, seconds: float) -> Dict[str, Any]:
    return {
        "step": step, "split": "train", "phase": phase,
        "acceptance": float(np.mean(infos.acceptance_rate)),
        "divergences": int(np.sum(infos.is_divergent)),
        "step_size": float(np.mean(infos.step_size)),
        "num_integration_steps": float(np.mean(infos.num_integration_steps)),
        "log_density": float(np.mean(infos.log_density)),
        "seconds": seconds,
    }


class _Log:
    """Records per chunk (to the history and the run's logger) and the progress bar."""

    def __init__(self, options: RunOptions, total: int):
        from tqdm.auto import tqdm  # imported here so that library import stays light

        self.options, self.history = options, []
        self.bar = tqdm(total=total, desc="mcmc", disable=not options.progress, leave=False)

    def record(self, entry: Dict[str, Any]) -> None:
        entry = {**(self.options.log_fields or {}), **entry}
        self.history.append(entry)
        if self.options.logger is not None:
            self.options.logger.log(entry)

    def chunk(self, phase: str, step: int, infos, seconds: float, transitions: int) -> None:
        self.record(_chunk_record(phase, step, infos, seconds))
        self.bar.update(transitions)
        self.bar.set_postfix(acc=f"{self.history[-1]['acceptance']:.2f}", div=int(self.history[-1]["divergences"]))

    def close(self) -> None:
        self.bar.close()
