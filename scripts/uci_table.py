"""Markdown tables of UCI results (test log-likelihood and RMSE) beside the published numbers.

Reads the ``summary.json`` of each run directory written by ``experiments/uci.py``
(a JSON list of per-method summaries; a single summary dict, or
``summary_<method>.json`` files when summary.json is missing, are read too) and
the published numbers of ``experiments/published_uci.csv`` (each with its source).
For each metric it prints one table, datasets × methods: bdljax's mean ±
standard error over splits (with the number of splits when it is not the
dataset's full set), then the published means (± as published where the CSV
has it). The test log-likelihood table ends with the gap between bdljax's best
method and the best published one (positive: bdljax is better).

    python scripts/uci_table.py runs/uci-concrete-* runs/uci-wine-quality-red-* --out results.md

As every script here, its last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_PUBLISHED = REPOSITORY / "experiments" / "published_uci.csv"
# The usual order of the benchmark's tables; other datasets follow alphabetically.
DATASET_ORDER = ["concrete", "kin8nm", "naval-propulsion-plant", "power-plant", "protein-tertiary-structure",
                 "wine-quality-red"]
PUBLISHED_ORDER = ["MC dropout", "deep ensembles", "PBP", "VI", "MC dropout 10x epochs"]
FULL_SPLITS = {"protein-tertiary-structure": 5}
METRICS = {"test_ll": ("Test log-likelihood (higher is better)", +1), "rmse": ("Test RMSE (lower is better)", -1)}


def read_summaries(run_dir: Path) -> List[Dict[str, Any]]:
    """The per-method summaries of one run directory."""
    path = run_dir / "summary.json"
    if path.is_file():
        content = json.loads(path.read_text())
        summaries = content if isinstance(content, list) else [content]
    else:
        summaries = [json.loads(p.read_text()) for p in sorted(run_dir.glob("summary_*.json"))]
    if not summaries:
        raise ValueError(f"{run_dir}: no summary.json or summary_<method>.json; is it a run directory of experiments/uci.py?")
    config_path = run_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    for summary in summaries:
        missing = [k for k in ("dataset", "method", "splits", "rmse", "test_ll") if k not in summary]
        if missing:
            raise ValueError(f"{run_dir}: a summary lacks {missing}; it is not a UCI summary")
        summary.setdefault("epochs_multiplier", config.get("epochs_multiplier", 1.0))
    return summaries


def method_label(summary: Dict[str, Any]) -> str:
    """The method's column: its name, with the epochs multiplier when it is not 1 (``mcdropout 10x epochs``)."""
    multiplier = float(summary.get("epochs_multiplier") or 1.0)
    return summary["method"] if multiplier == 1.0 else f"{summary['method']} {multiplier:g}x epochs"


def read_published(path: Path) -> List[Dict[str, Any]]:
    rows = []
    with open(path, newline="") as stream:
        for row in csv.DictReader(stream):
            rows.append({"dataset": row["dataset"], "method": row["method"], "metric": row["metric"],
                         "mean": float(row["mean"]),
                         "plus_minus": float(row["plus_minus"]) if row["plus_minus"].strip() else None,
                         "source": row["source"]})
    return rows


def _number(value) -> Optional[float]:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _decimals(metric: str, dataset: str) -> int:
    return 3 if metric == "rmse" and dataset in ("kin8nm", "naval-propulsion-plant") else 2


def build_tables(summaries: Sequence[Dict[str, Any]], published: Sequence[Dict[str, Any]]) -> Tuple[str, Dict[str, Any]]:
    """Markdown for every metric, and the figures as a dict."""
    ours: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for summary in summaries:
        pair = (summary["dataset"], method_label(summary))
        if pair in ours:
            print(f"note: {pair[1]} on {pair[0]} appears in several runs; the last one given is tabled",
                  file=sys.stderr)
        ours[pair] = summary
    datasets = sorted({d for d, _ in ours},
                      key=lambda d: (DATASET_ORDER.index(d) if d in DATASET_ORDER else len(DATASET_ORDER), d))
    our_methods = sorted({m for _, m in ours})
    published_methods = [m for m in PUBLISHED_ORDER if any(p["method"] == m for p in published)]
    published_methods += sorted({p["method"] for p in published} - set(published_methods))
    lookup = {(p["dataset"], p["method"], p["metric"]): p for p in published}

    figures: Dict[str, Any] = {"bdljax": {}, "published": {}, "best_gap_test_ll": {}}
    sections = []
    for metric, (title, sign) in METRICS.items():
        header = ["dataset"] + [f"bdljax {m}" for m in our_methods] + [f"published {m}" for m in published_methods]
        lines = [f"### {title}", "", "| " + " | ".join(header) + (" | best bdljax − best published |" if metric == "test_ll" else " |"),
                 "|" + "---|" * (len(header) + (1 if metric == "test_ll" else 0))]
        for dataset in datasets:
            digits = _decimals(metric, dataset)
            cells = [dataset]
            best_ours = None
            for method in our_methods:
                summary = ours.get((dataset, method))
                if summary is None:
                    cells.append("")
                    continue
                mean, stderr = _number(summary[metric]["mean"]), _number(summary[metric].get("stderr"))
                num_splits = len(summary["splits"])
                figures["bdljax"].setdefault(dataset, {}).setdefault(method, {})[metric] = {
                    "mean": mean, "stderr": stderr, "num_splits": num_splits}
                if mean is None:
                    cells.append("nan")
                    continue
                text = f"{mean:.{digits}f}" + (f" ± {stderr:.{digits}f}" if stderr is not None else "")
                if num_splits != FULL_SPLITS.get(dataset, 20):
                    text += f" ({num_splits} splits)"
                cells.append(text)
                if best_ours is None or sign * mean > sign * best_ours:
                    best_ours = mean
            best_published = None
            for method in published_methods:
                row = lookup.get((dataset, method, metric))
                if row is None:
                    cells.append("")
                    continue
                figures["published"].setdefault(dataset, {}).setdefault(method, {})[metric] = row["mean"]
                cells.append(f"{row['mean']:.{digits}f}" + (f" ± {row['plus_minus']:.{digits}f}"
                                                             if row["plus_minus"] is not None else ""))
                if best_published is None or sign * row["mean"] > sign * best_published:
                    best_published = row["mean"]
            if metric == "test_ll":
                gap = None if best_ours is None or best_published is None else best_ours - best_published
                figures["best_gap_test_ll"][dataset] = gap
                cells.append("" if gap is None else f"{gap:+.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        sections.append("\n".join(lines))
    sources = sorted({p["source"] for p in published})
    notes = ("bdljax: mean ± standard error over splits (std(ddof=1)/√n). Published: means as printed; ± where the "
             "CSV gives one (see its source). Sources: " + "; ".join(sources) + ".")
    return "\n\n".join(sections) + "\n\n" + notes + "\n", figures


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="run directories of experiments/uci.py")
    parser.add_argument("--published", default=str(DEFAULT_PUBLISHED), help="CSV of published numbers")
    parser.add_argument("--out", default=None, help="also write the Markdown to this file")
    args = parser.parse_args(argv)
    try:
        summaries = [s for run_dir in args.run_dirs for s in read_summaries(Path(run_dir))]
        published = read_published(Path(args.published))
    except (OSError, ValueError, KeyError) as error:
        parser.exit(2, f"error: {error}\n")
    markdown, figures = build_tables(summaries, published)
    if args.out:
        Path(args.out).write_text(markdown)
    print(markdown)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
