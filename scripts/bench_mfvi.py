"""Benchmark: Bayes by Backprop training speed (bdljax vs hand-written PyTorch) and gradient variance by estimator.

Problem: 1000 × 8 synthetic regression, a 1-hidden-layer 50-unit ReLU MLP,
Gaussian likelihood (σ = 0.5), N(0, 1) prior, mean-field Gaussian q with
softplus scales, one Monte Carlo sample per step, Adam (lr 1e-3), closed-form
KL, likelihood scaled by N/|B|. Measured in this one run:

* steps per second at minibatch 32 and full batch (1000):
  - bdljax ``mfvi.build`` through ``bdljax.run.training.fit`` (each epoch one
    compiled ``lax.scan``; full batch means one step per epoch, so also
    ``lax.scan`` over many full-batch steps);
  - bdljax with local reparameterisation (``bayesian_layers.mlp``);
  - a hand-written PyTorch Bayes by Backprop of the same model and settings
    (skipped, with a message, when torch is not installed).
  Each timing is the best of ``--repeats`` after a compile/warm-up run; both
  libraries run single-threaded (XLA_FLAGS, torch.set_num_threads(1)).
* gradient variance of the ELBO estimate w.r.t. q's means and raw scales
  at a trained q, over 512 draws on a fixed batch, for the pytree
  reparameterisation, local reparameterisation and Flipout, at batch 32 and 1000.

    python scripts/bench_mfvi.py            # prints a table, then one JSON line
    python scripts/bench_mfvi.py --quick    # seconds, for the test suite
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Dict, List, Optional

# Both sides single-threaded (set before JAX starts): these ops are far too small for threads to help,
# and on a shared machine extra threads only add contention.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from bdljax.nn import bayesian_layers, models  # noqa: E402
from bdljax.core import likelihoods, posterior, priors
from bdljax.methods import mfvi
from bdljax import recipes
from bdljax.run import training
from bdljax.run.runner import execute

NUM_DATA, NUM_FEATURES, HIDDEN = 1000, 8, 50
NOISE, PRIOR_SCALE, LEARNING_RATE, INIT_SCALE = 0.5, 1.0, 1e-3, 1e-2


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM_DATA, NUM_FEATURES)).astype(np.float32)
    w = rng.normal(size=NUM_FEATURES) / np.sqrt(NUM_FEATURES)
    y = (np.sin(2 * x @ w) + 0.3 * x[:, 0] * x[:, 1] + NOISE * rng.normal(size=NUM_DATA)).astype(np.float32)
    return x, y


def best_of(repeats: int, run) -> float:
    """Fastest wall time of ``repeats`` calls of ``run`` (the machine is shared: the minimum is the least disturbed)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def bdljax_fit_speed(model, variational_apply, x, y, batch_size: int, num_epochs: int, repeats: int):
    """Steps per second of mfvi through bdljax.run.training.fit; returns (steps/s, final state)."""
    log_post = posterior.log_posterior(model.apply, likelihoods.gaussian(NOISE), priors.gaussian(PRIOR_SCALE), NUM_DATA)
    method = mfvi.build(log_post, optax.adam(LEARNING_RATE), init_scale=INIT_SCALE, variational_apply=variational_apply)
    state = jax.jit(lambda k: method.init(k, model.init))(jax.random.key(0))
    data = (jnp.asarray(x), jnp.asarray(y))
    training.fit(method, state, data, key=jax.random.key(1), num_epochs=1, batch_size=batch_size, progress=False)  # compile
    result = {}

    def run():
        fitted = training.fit(method, state, data, key=jax.random.key(2), num_epochs=num_epochs, batch_size=batch_size,
                           progress=False)
        jax.block_until_ready(fitted.state)
        result["state"] = fitted.state

    seconds = best_of(repeats, run)
    return num_epochs * (NUM_DATA // batch_size) / seconds, result["state"], method


def bdljax_scan_speed(model, x, y, num_steps: int, repeats: int) -> float:
    """Full-batch steps per second with the whole run as one compiled lax.scan of ``method.update``."""
    log_post = posterior.log_posterior(model.apply, likelihoods.gaussian(NOISE), priors.gaussian(PRIOR_SCALE), NUM_DATA)
    method = mfvi.build(log_post, optax.adam(LEARNING_RATE), init_scale=INIT_SCALE)
    state = jax.jit(lambda k: method.init(k, model.init))(jax.random.key(0))
    data = (jnp.asarray(x), jnp.asarray(y))

    @jax.jit
    def run(state, key):
        return jax.lax.scan(lambda s, k: method.update(s, data, k), state, jax.random.split(key, num_steps))[0]

    jax.block_until_ready(run(state, jax.random.key(1)))
    return num_steps / best_of(repeats, lambda: jax.block_until_ready(run(state, jax.random.key(2))))


def runner_speed(model, x, y, num_epochs: int, repeats: int) -> Dict[str, float]:
    """Full-batch steps per second of the MFVI recipe's plan through ``runner.execute`` (init, epochs, samples,
    records), and of a bare ``lax.scan`` of the same plan's update over as many steps, measured alike."""
    problem = recipes.Problem(model, likelihoods.gaussian(NOISE), priors.gaussian(PRIOR_SCALE), x, y)
    plan = recipes.plan("mfvi", problem, num_epochs=num_epochs, batch_size=None, learning_rate=LEARNING_RATE,
                        init_scale=INIT_SCALE, num_samples=1)
    execute(plan, jax.random.key(0))  # compile
    executed = best_of(repeats, lambda: jax.block_until_ready(execute(plan, jax.random.key(1)).samples))
    data = (jnp.asarray(x), jnp.asarray(y))
    state = jax.jit(lambda k: plan.transform.init(k, model.init))(jax.random.key(0))

    @jax.jit
    def scan(state, key):
        return jax.lax.scan(lambda s, k: plan.transform.update(s, data, k), state, jax.random.split(key, num_epochs))[0]

    jax.block_until_ready(scan(state, jax.random.key(1)))
    bare = best_of(repeats, lambda: jax.block_until_ready(scan(state, jax.random.key(2))))
    return {"runner_full": num_epochs / executed, "runner_bare_scan_full": num_epochs / bare}


def torch_speed(x, y, batch_size: int, num_epochs: int, repeats: int) -> Optional[float]:
    """A hand-written PyTorch Bayes by Backprop of the same model and settings; None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    softplus = torch.nn.functional.softplus
    raw_init = float(np.log(np.expm1(INIT_SCALE)))
    shapes = [(NUM_FEATURES, HIDDEN), (HIDDEN,), (HIDDEN, 1), (1,)]

    def fresh():
        means = [torch.nn.Parameter(torch.randn(s) / np.sqrt(s[0]) if len(s) == 2 else torch.zeros(s)) for s in shapes]
        raws = [torch.nn.Parameter(torch.full(s, raw_init)) for s in shapes]
        return means, raws, torch.optim.Adam(means + raws, lr=LEARNING_RATE)

    def step(means, raws, optimizer, xb, yb):
        scales = [softplus(r) for r in raws]
        w1, b1, w2, b2 = [m + s * torch.randn_like(m) for m, s in zip(means, scales)]
        out = (torch.relu(xb @ w1 + b1) @ w2 + b2)[:, 0]
        log_lik = (-0.5 * ((yb - out) / NOISE) ** 2 - np.log(NOISE) - 0.5 * np.log(2 * np.pi)).sum()
        kl = sum((np.log(PRIOR_SCALE) - torch.log(s) + (s**2 + m**2) / (2 * PRIOR_SCALE**2) - 0.5).sum()
                 for m, s in zip(means, scales))
        loss = -(NUM_DATA / xb.shape[0]) * log_lik + kl
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def train_epochs(epochs):
        means, raws, optimizer = fresh()
        steps_per_epoch = NUM_DATA // batch_size
        for _ in range(epochs):
            order = torch.randperm(NUM_DATA)
            for i in range(steps_per_epoch):
                idx = order[i * batch_size:(i + 1) * batch_size]
                step(means, raws, optimizer, x_t[idx], y_t[idx])

    train_epochs(1)  # warm-up
    return num_epochs * (NUM_DATA // batch_size) / best_of(repeats, lambda: train_epochs(num_epochs))


def gradient_variances(state, x, y, batch_size: int, num_draws: int = 512) -> Dict[str, Dict[str, float]]:
    """Σ over parameters of the per-coordinate variance of ∇ELBO estimates, per estimator, on a fixed batch."""
    model = bayesian_layers.mlp((NUM_FEATURES,), (HIDDEN,), 1)
    log_post = posterior.log_posterior(model.apply, likelihoods.gaussian(NOISE), priors.gaussian(PRIOR_SCALE), NUM_DATA)
    batch = (jnp.asarray(x[:batch_size]), jnp.asarray(y[:batch_size]))
    variational = mfvi.VariationalParams(state.mean, state.raw_scale)
    results = {}
    for name in ("reparameterization",) + bayesian_layers.ESTIMATORS:
        variational_apply = None if name == "reparameterization" else bayesian_layers.variational_apply(model, name)
        objective = mfvi.elbo_objective(log_post, variational_apply=variational_apply)
        gradient = jax.grad(lambda v, k: objective(v, batch, k)[0])
        grads = jax.jit(jax.vmap(gradient, in_axes=(None, 0)))(variational, jax.random.split(jax.random.key(5), num_draws))
        results[name] = {
            part: float(sum(jnp.sum(jnp.var(g, axis=0)) for g in jax.tree.leaves(getattr(grads, part))))
            for part in ("mean", "raw_scale")
        }
    return results


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (seconds), for the test suite")
    parser.add_argument("--repeats", type=int, default=3, help="timings per configuration; the best is reported")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    args = parser.parse_args(argv)
    quick = args.quick
    repeats = 1 if quick else args.repeats
    epochs_32, epochs_full, scan_steps = (1, 2, 10) if quick else (30, 300, 2000)
    torch_epochs_32, torch_epochs_full = (1, 2) if quick else (10, 300)
    x, y = make_data()
    plain = models.mlp((NUM_FEATURES,), (HIDDEN,), 1)
    bayesian = bayesian_layers.mlp((NUM_FEATURES,), (HIDDEN,), 1)
    lrt = bayesian_layers.variational_apply(bayesian, bayesian_layers.LOCAL_REPARAMETERIZATION)

    speed: Dict[str, Optional[float]] = {}
    speed["bdljax_fit_b32"], state_32, _ = bdljax_fit_speed(plain, None, x, y, 32, epochs_32, repeats)
    speed["bdljax_lrt_fit_b32"], _, _ = bdljax_fit_speed(bayesian, lrt, x, y, 32, epochs_32, repeats)
    speed["bdljax_fit_full"], _, _ = bdljax_fit_speed(plain, None, x, y, NUM_DATA, epochs_full, repeats)
    speed["bdljax_scan_full"] = bdljax_scan_speed(plain, x, y, scan_steps, repeats)
    speed.update(runner_speed(plain, x, y, scan_steps, repeats))
    torch_message = None
    if args.no_torch:
        torch_message = "PyTorch baseline skipped (--no-torch)"
    else:
        speed["torch_b32"] = torch_speed(x, y, 32, torch_epochs_32, repeats)
        speed["torch_full"] = torch_speed(x, y, NUM_DATA, torch_epochs_full, repeats)
        if speed["torch_b32"] is None:
            torch_message = "PyTorch not installed: baseline skipped (pip install torch==2.13.0 to compare)"
    ratios = {"runner_over_bare_scan_full": speed["runner_full"] / speed["runner_bare_scan_full"]}
    if speed.get("torch_b32"):
        ratios["bdljax_over_torch_b32"] = speed["bdljax_fit_b32"] / speed["torch_b32"]
        ratios["bdljax_lrt_over_torch_b32"] = speed["bdljax_lrt_fit_b32"] / speed["torch_b32"]
        ratios["bdljax_fit_over_torch_full"] = speed["bdljax_fit_full"] / speed["torch_full"]
        ratios["bdljax_scan_over_torch_full"] = speed["bdljax_scan_full"] / speed["torch_full"]

    variances = {b: gradient_variances(state_32, x, y, b, 32 if quick else 512) for b in (32, NUM_DATA)}
    for b, by_estimator in variances.items():
        base = by_estimator["reparameterization"]
        for name in bayesian_layers.ESTIMATORS:
            for part in ("mean", "raw_scale"):
                ratios[f"grad_var_reduction_{name}_{part}_b{b}"] = base[part] / by_estimator[name][part]

    print(f"bench_mfvi: MLP {NUM_FEATURES}-{HIDDEN}-1 on {NUM_DATA}×{NUM_FEATURES}, 1 MC sample, Adam; "
          f"jax {jax.__version__} on {jax.default_backend()}, {platform.processor() or platform.machine()}")
    print(f"{'training steps / second':<44}{'batch 32':>12}{'batch 1000':>12}")
    rows = [("bdljax mfvi (training.fit, epoch = one scan)", "bdljax_fit_b32", "bdljax_fit_full"),
            ("bdljax mfvi, local reparam. (training.fit)", "bdljax_lrt_fit_b32", None),
            ("bdljax mfvi (one scan over the whole run)", None, "bdljax_scan_full"),
            ("bdljax mfvi recipe through runner.execute", None, "runner_full"),
            ("  the same plan's update, one bare scan", None, "runner_bare_scan_full"),
            ("PyTorch Bayes by Backprop (Python loop)", "torch_b32", "torch_full")]
    fmt = lambda key: "—" if key is None or speed.get(key) is None else f"{speed[key]:,.0f}"  # noqa: E731
    for label, b32, full in rows:
        print(f"{label:<44}{fmt(b32):>12}{fmt(full):>12}")
    if torch_message:
        print(torch_message)
    for name, value in ratios.items():
        if not name.startswith("grad_var"):
            print(f"  ratio {name}: {value:.1f}×")
    print(f"\n{'gradient variance (Σ per-coordinate var)':<44}{'means':>12}{'raw scales':>12}{'mean ratio':>12}")
    for b, by_estimator in variances.items():
        base = by_estimator["reparameterization"]
        for name, parts in by_estimator.items():
            print(f"{f'batch {b}: {name}':<44}{parts['mean']:>12.4g}{parts['raw_scale']:>12.4g}"
                  f"{base['mean'] / parts['mean']:>11.1f}×")
    summary = {"benchmark": "mfvi", "quick": quick, "steps_per_second": speed, "ratios": ratios,
               "gradient_variance": {str(b): v for b, v in variances.items()}, "torch": torch_message or "measured",
               "jax": jax.__version__, "backend": jax.default_backend(), "repeats": repeats}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
