"""Markdown tables of ``experiments/sequences.py`` results over seeds: mean ± standard error per method.

Each run directory (one seed) holds the ``summary.json`` the experiment writes:
``{task: {"settings": ..., "methods": {method: metrics}}}``. For every task
present, this prints one table, methods × metrics, with the mean over the run
directories that have the method and the standard error s/√n of that mean
(n, the number of seeds, is printed; with one seed no error is given).

* ``co2``: RMSE (ppm), test log-likelihood and interval coverage at 50/90/95 %
  for the one-step forecast, the h-step forecast at the largest horizon, and
  the free-running forecast over the whole test period.
* ``mnist_rows``: accuracy, NLL, ECE, Brier and the OOD AUROC (Fashion-MNIST)
  from the predictive entropy and the mutual information.

    python scripts/sequences_table.py runs/sequences-co2-s5-seed0 runs/sequences-co2-s5-seed1 ...

As every script here, its last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

FORECAST_METRICS = ("rmse", "test_ll", "coverage_50", "coverage_90", "coverage_95")
CLASSIFICATION_METRICS = ("accuracy", "nll", "ece", "brier", "ood_auroc_entropy", "ood_auroc_mutual_information")


def read_run(run_dir: Path) -> Dict[str, dict]:
    """``{task: {"methods": ...}}`` of one run directory; fails naming the directory when it has no summary."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no summary.json (is {run_dir} a finished experiments/sequences.py run?)")
    summary = json.loads(path.read_text())
    if not isinstance(summary, dict) or not any(isinstance(v, dict) and "methods" in v for v in summary.values()):
        raise SystemExit(f"{path}: not a sequences summary ({{task: {{'methods': ...}}}})")
    return summary


def flat_metrics(task: str, metrics: dict) -> Dict[str, float]:
    """The reported figures of one method in one run, as ``{column: value}``."""
    if task == "co2":
        longest = max(metrics["multi_step"], key=lambda h: int(h.lstrip("h")))
        parts = {"1-step": metrics["one_step"], f"{longest}": metrics["multi_step"][longest],
                 "free-run": metrics["free_running"]}
        return {f"{part} {name}": float(values[name]) for part, values in parts.items() for name in FORECAST_METRICS}
    return {name: float(metrics[name]) for name in CLASSIFICATION_METRICS if name in metrics}


def mean_and_stderr(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and the standard error of the mean (sample standard deviation / √n; NaN for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def aggregate(run_dirs: Sequence[Path]) -> Dict[str, Dict[str, Dict[str, dict]]]:
    """``{task: {method: {column: {"mean", "stderr", "n"}}}}`` over the run directories."""
    collected: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    for run_dir in run_dirs:
        for task, result in read_run(run_dir).items():
            for method, metrics in result["methods"].items():
                for column, value in flat_metrics(task, metrics).items():
                    collected.setdefault(task, {}).setdefault(method, {}).setdefault(column, []).append(value)
    table: Dict[str, Dict[str, Dict[str, dict]]] = {}
    for task, methods in collected.items():
        for method, columns in methods.items():
            for column, values in columns.items():
                mean, stderr = mean_and_stderr(values)
                table.setdefault(task, {}).setdefault(method, {})[column] = {"mean": mean, "stderr": stderr,
                                                                             "n": len(values)}
    return table


def markdown(table: Dict[str, Dict[str, Dict[str, dict]]]) -> str:
    lines = []
    for task, methods in table.items():
        columns = list(next(iter(methods.values())).keys())
        lines += [f"### {task}", "", "| method | seeds | " + " | ".join(columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        for method, figures in methods.items():
            n = max(f["n"] for f in figures.values())
            cells = []
            for column in columns:
                figure = figures.get(column)
                if figure is None:
                    cells.append("—")
                elif math.isnan(figure["stderr"]):
                    cells.append(f"{figure['mean']:.3f}")
                else:
                    cells.append(f"{figure['mean']:.3f} ± {figure['stderr']:.3f}")
            lines.append(f"| {method} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> Dict[str, Dict[str, Dict[str, dict]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="experiments/sequences.py run directories (one per seed)")
    args = parser.parse_args(argv)
    table = aggregate(args.run_dirs)
    print(markdown(table))
    print(json.dumps(_nan_to_none(table), allow_nan=False))
    return table


def _nan_to_none(table):
    """The standard error of one seed is NaN, which JSON lacks: null instead."""
    return {task: {method: {column: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in f.items()}
                            for column, f in columns.items()} for method, columns in methods.items()}
            for task, methods in table.items()}


if __name__ == "__main__":
    main(sys.argv[1:])
