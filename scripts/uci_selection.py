"""Which grid point each validation criterion picks, per split, in UCI run directories.

For every run directory of ``experiments/uci.py`` whose validation records carry the
members' own log-likelihoods (``sample_ll_mean``: deep ensembles), compares the
grid point the mixture's validation log-likelihood (``test_ll``) would pick with
the one the members' mean picks (the protocol's choice), counts the learning rates
each picks, and reports how far the worst member falls below the mixture on test.

    python scripts/uci_selection.py runs/uci_s4/ensemble-*/

Prints one line per run directory; the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence


def compare(run_dir: Path) -> Dict[str, Any]:
    if not (run_dir / "metrics.jsonl").is_file():
        raise ValueError(f"{run_dir}: no metrics.jsonl; give run directories of experiments/uci.py")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    # Only the methods selected by their members' log-likelihood write it (deep ensembles).
    validation = [r for r in records if r.get("split") == "validation" and "sample_ll_mean" in r]
    if not validation:
        raise ValueError(f"{run_dir}: no validation records with sample_ll_mean (an ensemble run of "
                         "experiments/uci.py with a validation grid writes them)")
    by_split: Dict[int, List[dict]] = collections.defaultdict(list)
    for record in validation:
        by_split[record["uci_split"]].append(record)
    by_mixture, by_members, differ = collections.Counter(), collections.Counter(), 0
    for split_records in by_split.values():
        mixture_choice = max(split_records, key=lambda r: r["test_ll"])
        members_choice = max(split_records, key=lambda r: r["sample_ll_mean"])
        by_mixture[str(mixture_choice.get("learning_rate"))] += 1
        by_members[str(members_choice.get("learning_rate"))] += 1
        differ += mixture_choice["grid_point"] != members_choice["grid_point"]
    if len({r["method"] for r in validation}) > 1:
        raise ValueError(f"{run_dir}: several methods wrote members' log-likelihoods; give one per run directory")
    method = validation[0]["method"]
    tests = [r for r in records if r.get("split") == "test" and r["method"] == method and "sample_ll_min" in r]
    return {
        "run_dir": str(run_dir), "dataset": validation[0]["dataset"], "method": method, "splits": len(by_split),
        "learning_rate_by_mixture_ll": dict(by_mixture), "learning_rate_by_members_ll": dict(by_members),
        "splits_where_choices_differ": differ,
        "test_worst_member_ll_min": min((r["sample_ll_min"] for r in tests), default=None),
        "test_mixture_minus_worst_member_max": max((r["test_ll"] - r["sample_ll_min"] for r in tests), default=None),
    }


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    figures = [compare(d) for d in args.run_dirs]
    print("| dataset | splits | lr by mixture LL | lr by members' LL | choices differ | worst member − mixture (test, max) |")
    print("|---|---|---|---|---|---|")
    for f in figures:
        gap = f["test_mixture_minus_worst_member_max"]
        print(f"| {f['dataset']} | {f['splits']} | {f['learning_rate_by_mixture_ll']} | "
              f"{f['learning_rate_by_members_ll']} | {f['splits_where_choices_differ']} | "
              f"{'' if gap is None else f'{gap:.3f}'} |")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    sys.exit(main() and 0)
