"""Benchmark: an MC dropout predictive of T passes over N test points for a one-hidden-layer MLP.

Compares, in one run and on the same network, weights and inputs:

* ``bdljax weight samples`` (the default form): T masks drawn once per pass
  and folded into the kernel rows (W·diag(m)), then the T deterministic
  passes vmapped — sampling and predictive in one compiled call — with the
  passes vmapped in chunks of ``dropout.sample_chunk_for(N, width)`` (the
  recommended use) and all at once;
* ``bdljax per-point masks`` (``per_point_masks=True``): T keys, the dropout
  network in training mode vmapped over them, an independent mask for every
  activation of every test point, chunked and not;
* ``JAX loop``: a Python loop of T calls of one jitted training-mode pass;
* ``PyTorch loop``: T passes of the same network in ``train()`` mode under
  ``no_grad``, with torch's default threads and with one (the faster is the
  baseline); skipped with a message when torch is absent.

Times are medians over ``--repeats`` calls after a warm-up call, in
milliseconds, each ending with the results on the host. The last line is one
JSON object with every figure and the speed-ups; the issue's target is
bdljax ≥ 10× faster than the PyTorch loop.

    python scripts/bench_mcdropout.py [--num-passes 100] [--num-points 1000] [--hidden 50] [--repeats 30]
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

from bdljax import recipes

from bdljax.nn import dropout
from bdljax.core import likelihoods, priors
from bdljax.methods import mcdropout
from bdljax.nn import models
from bdljax.run import predictive


def median_ms(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``run()`` in ms, after one warm-up call; ``run`` must block until done."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def torch_loop(params, x: np.ndarray, rate: float, num_passes: int, repeats: int,
               threads: Optional[int] = None) -> Optional[Dict[str, float]]:
    """The PyTorch loop on the same weights (``threads`` intra-op threads, default torch's); ``None`` without torch."""
    try:
        import torch
    except ImportError:
        if threads is None:
            print("torch is not installed: skipping the PyTorch loop (pip install torch to include it).")
        return None
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads)
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

    result = {"ms": median_ms(run, repeats), "threads": torch.get_num_threads(), "version": torch.__version__}
    torch.set_num_threads(default_threads)
    return result


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
    problem = recipes.Problem(model, likelihoods.gaussian(1.0), priors.gaussian(1.0), x, np.zeros(len(x), np.float32))
    x_device = jnp.asarray(x)
    key = jax.random.key(args.seed + 1)
    results: Dict[str, Dict[str, float]] = {}

    # bdljax, both sample forms: sampling and the vmapped predictive in one compiled call, the passes vmapped
    # in chunks of dropout.sample_chunk_for(...) (the recommended use) or all at once.
    chunk = dropout.sample_chunk_for(args.num_points, max(args.hidden, args.input_dim))
    for form, per_point in (("weight_samples", False), ("per_point_masks", True)):
        structure = dropout.dropout_structure(model.apply, params, x, per_point_masks=per_point)
        transform = mcdropout.build(problem.log_posterior(), recipes.make_optimizer("adam", 1e-3), structure)
        state = transform.init(key, params)
        apply = dropout.sample_apply(model.apply, structure)
        for suffix, sample_chunk in (("", chunk), ("_unchunked", None)):
            predict = jax.jit(lambda s, k, xs, t=transform, a=apply, c=sample_chunk: predictive.predictive_outputs(
                a, t.sample(s, k, num_passes), xs, sample_chunk=c))
            results[f"bdljax_{form}{suffix}"] = {
                "ms": median_ms(lambda: np.asarray(predict(state, key, x_device)), args.repeats)}

    # A Python loop of T jitted training-mode passes (per-point masks, like PyTorch's train mode).
    one_pass = jax.jit(lambda p, k, xs: model.apply(p, xs, rng=k, train=True))
    keys = list(jax.random.split(key, num_passes))
    results["jax_loop"] = {"ms": median_ms(lambda: np.stack([np.asarray(o) for o in [
        one_pass(params, k, x_device) for k in keys]]), args.repeats)}

    # PyTorch with its default threads and with one (on a busy machine spinning threads can be the slower).
    torch_results = {threads: torch_loop(params, x, rate, num_passes, args.repeats, threads) for threads in (None, 1)}
    torch_result = None
    if torch_results[None] is not None:
        for threads, result in torch_results.items():
            results[f"torch_loop_threads_{result['threads']}"] = result
        torch_result = min(torch_results.values(), key=lambda r: r["ms"])
        results["torch_loop"] = torch_result

    best = results["bdljax_weight_samples"]["ms"]
    ratios = {
        "jax_loop_over_bdljax": results["jax_loop"]["ms"] / best,
        "unchunked_over_chunked": results["bdljax_weight_samples_unchunked"]["ms"] / best,
        "per_point_over_weight_samples": results["bdljax_per_point_masks"]["ms"] / best,
    }
    if torch_result is not None:
        ratios["torch_loop_over_bdljax"] = torch_result["ms"] / best
        ratios["torch_loop_over_bdljax_per_point"] = torch_result["ms"] / results["bdljax_per_point_masks"]["ms"]

    labels = {
        "bdljax_weight_samples": f"bdljax, weight samples (default), chunks of {chunk}",
        "bdljax_weight_samples_unchunked": "bdljax, weight samples, all passes vmapped",
        "bdljax_per_point_masks": f"bdljax, per-point masks, chunks of {chunk}",
        "bdljax_per_point_masks_unchunked": "bdljax, per-point masks, all passes vmapped",
        "jax_loop": f"JAX, Python loop of {num_passes} jitted passes",
    }
    for name in results:
        if name.startswith("torch_loop_threads_"):
            labels[name] = f"PyTorch, loop of {num_passes} passes, {name.rsplit('_', 1)[1]} thread(s)"
    print(f"MC dropout predictive: T={num_passes} passes, N={args.num_points} points, "
          f"MLP {args.input_dim}-{args.hidden}-1, p={rate}; median of {args.repeats} ({jax.devices()[0].platform}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"{'method':<52}{'ms':>10}{'× bdljax':>10}")
    for name, label in labels.items():
        if name in results:
            ms = results[name]["ms"]
            print(f"{label:<52}{ms:>10.2f}{ms / best:>10.1f}")
    if torch_result is not None:
        verdict = "met" if ratios["torch_loop_over_bdljax"] >= 10 else "NOT met"
        speedup = ratios["torch_loop_over_bdljax"]
        print(f"target bdljax ≥ 10× faster than the PyTorch loop: {verdict} ({speedup:.1f}×)")

    summary = {
        "benchmark": "mcdropout_predictive", "num_passes": num_passes, "num_points": args.num_points,
        "input_dim": args.input_dim, "hidden": args.hidden, "dropout_rate": rate, "repeats": args.repeats,
        "sample_chunk": chunk, "ms": {name: result["ms"] for name, result in results.items()}, "ratios": ratios,
        "target_10x_vs_torch": None if torch_result is None else ratios["torch_loop_over_bdljax"] >= 10,
        "torch": None if torch_result is None else {k: torch_result[k] for k in ("version", "threads")},
        "jax": jax.__version__, "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
