"""Benchmark: an MC dropout predictive of T passes over N test points for a one-hidden-layer MLP.

Compares, in one run and on the same network and inputs:

* ``bdljax weight samples`` (the default): T masks drawn once per pass and
  folded into the kernel rows (W·diag(m)), then the T deterministic passes
  vmapped — one compiled call, masks included;
* ``bdljax per-point masks`` (``per_point_masks=True``): T keys, the dropout
  network in training mode vmapped over them, an independent mask for every
  activation of every test point — one compiled call;
* ``JAX loop``: a Python loop of T calls of one jitted training-mode pass;
* ``PyTorch loop``: T passes of the same network (same weights) in ``train()``
  mode under ``no_grad`` (skipped, with a message, when torch is absent).

Times are medians over ``--repeats`` calls after a warm-up call, in
milliseconds, each ending with the results on the host. The last line is one
JSON object with every figure and the speed-ups; the issue's target is
bdljax ≥ 10× faster than the PyTorch loop.

    python scripts/bench_mcdropout.py [--num-passes 100] [--num-points 1000] [--hidden 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from bdljax import likelihoods, mcdropout, methods, models, predictive, priors


def median_ms(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``run()`` in ms, after one warm-up call; ``run`` must block until done."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def torch_loop(params, x: np.ndarray, rate: float, num_passes: int, repeats: int) -> Optional[Dict[str, float]]:
    """The PyTorch loop on the same weights; ``None`` when torch is not installed."""
    try:
        import torch
    except ImportError:
        print("torch is not installed: skipping the PyTorch loop (pip install torch to include it).")
        return None
    layers = params["params"]
    network = torch.nn.Sequential(
        torch.nn.Dropout(rate), torch.nn.Linear(*np.shape(layers["Dense_0"]["kernel"])), torch.nn.ReLU(),
        torch.nn.Dropout(rate), torch.nn.Linear(*np.shape(layers["Dense_1"]["kernel"])),
    )
    with torch.no_grad():
        for linear, name in ((network[1], "Dense_0"), (network[4], "Dense_1")):
            linear.weight.copy_(torch.from_numpy(np.asarray(layers[name]["kernel"]).T.copy()))
            linear.bias.copy_(torch.from_numpy(np.asarray(layers[name]["bias"]).copy()))
    network.train()  # dropout on, as MC dropout predicts
    inputs = torch.from_numpy(x)

    def run():
        with torch.no_grad():
            return torch.stack([network(inputs) for _ in range(num_passes)]).numpy()

    return {"ms": median_ms(run, repeats), "threads": torch.get_num_threads(), "version": torch.__version__}


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-passes", type=int, default=100, help="T, the MC dropout passes")
    parser.add_argument("--num-points", type=int, default=1000, help="test points")
    parser.add_argument("--input-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--dropout-rate", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    num_passes, rate = args.num_passes, args.dropout_rate

    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(args.num_points, args.input_dim)).astype(np.float32)
    model = models.mlp((args.input_dim,), (args.hidden,), 1).with_dropout(rate)
    params = jax.jit(model.init)(jax.random.key(args.seed))
    problem = methods.Problem(model, likelihoods.gaussian(1.0), priors.gaussian(1.0), x, np.zeros(len(x), np.float32))
    x_device = jnp.asarray(x)
    key = jax.random.key(args.seed + 1)
    results: Dict[str, Dict[str, float]] = {}

    # bdljax, both sample forms: sampling and the vmapped predictive in one compiled call.
    for name, per_point in (("bdljax_weight_samples", False), ("bdljax_per_point_masks", True)):
        structure = mcdropout.dropout_structure(model.apply, params, x, per_point_masks=per_point)
        transform = mcdropout.build(problem.log_posterior(), methods.make_optimizer("adam", 1e-3), structure)
        state = transform.init(key, params)
        apply = mcdropout.sample_apply(model.apply, structure)
        predict = jax.jit(lambda s, k, xs, t=transform, a=apply: predictive.predictive_outputs(
            a, t.sample(s, k, num_passes), xs))
        results[name] = {"ms": median_ms(lambda: np.asarray(predict(state, key, x_device)), args.repeats),
                         "form": structure.form}

    # The weight-sample predictive alone, given the T samples (what predictive_outputs costs).
    structure = mcdropout.dropout_structure(model.apply, params, x)
    samples = jax.jit(jax.vmap(mcdropout.weight_sample, in_axes=(None, 0, None)), static_argnums=2)(
        params, jax.random.split(key, num_passes), structure)
    apply = mcdropout.sample_apply(model.apply, structure)
    results["bdljax_weight_samples_given_samples"] = {
        "ms": median_ms(lambda: np.asarray(predictive.predictive_outputs(apply, samples, x_device)), args.repeats)}

    # A Python loop of T jitted training-mode passes (per-point masks, like PyTorch's train mode).
    one_pass = jax.jit(lambda p, k, xs: model.apply(p, xs, rng=k, train=True))
    keys = list(jax.random.split(key, num_passes))
    results["jax_loop"] = {"ms": median_ms(lambda: np.stack([np.asarray(o) for o in [
        one_pass(params, k, x_device) for k in keys]]), args.repeats)}

    torch_result = torch_loop(params, x, rate, num_passes, args.repeats)
    if torch_result is not None:
        results["torch_loop"] = torch_result

    best = results["bdljax_weight_samples"]["ms"]
    ratios = {
        "jax_loop_over_bdljax": results["jax_loop"]["ms"] / best,
        "per_point_over_weight_samples": results["bdljax_per_point_masks"]["ms"] / best,
    }
    if torch_result is not None:
        ratios["torch_loop_over_bdljax"] = torch_result["ms"] / best
        ratios["torch_loop_over_bdljax_per_point"] = torch_result["ms"] / results["bdljax_per_point_masks"]["ms"]

    labels = {
        "bdljax_weight_samples": "bdljax, weight samples (default), vmapped",
        "bdljax_weight_samples_given_samples": "  of which the predictive alone",
        "bdljax_per_point_masks": "bdljax, per-point masks, vmapped",
        "jax_loop": f"JAX, Python loop of {num_passes} jitted passes",
        "torch_loop": f"PyTorch, loop of {num_passes} passes in train mode",
    }
    print(f"MC dropout predictive: T={num_passes} passes, N={args.num_points} points, "
          f"MLP {args.input_dim}-{args.hidden}-1, p={rate}; median of {args.repeats} ({jax.devices()[0].platform})")
    print(f"{'method':<48}{'ms':>10}{'× bdljax':>10}")
    for name, label in labels.items():
        if name in results:
            ms = results[name]["ms"]
            print(f"{label:<48}{ms:>10.2f}{ms / best:>10.1f}")
    if torch_result is not None:
        verdict = "met" if ratios["torch_loop_over_bdljax"] >= 10 else "NOT met"
        print(f"target bdljax ≥ 10× faster than the PyTorch loop: {verdict} ({ratios['torch_loop_over_bdljax']:.1f}×)")

    summary = {
        "benchmark": "mcdropout_predictive", "num_passes": num_passes, "num_points": args.num_points,
        "input_dim": args.input_dim, "hidden": args.hidden, "dropout_rate": rate, "repeats": args.repeats,
        "ms": {name: result["ms"] for name, result in results.items()}, "ratios": ratios,
        "target_10x_vs_torch": None if torch_result is None else ratios["torch_loop_over_bdljax"] >= 10,
        "torch": None if torch_result is None else {"version": torch_result["version"], "threads": torch_result["threads"]},
        "jax": jax.__version__, "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
