"""What a run reports: normalised regret per seed and over seeds, paired differences, the table and the figure."""

from __future__ import annotations

from typing import Dict

import numpy as np

from experiments.bandits.simulation import Trajectory, normalised_regret


def paired_difference(normalised: np.ndarray, reference: np.ndarray) -> Dict[str, float]:
    """Mean ± standard error over seeds of (agent − reference) normalised regret on the *same* episodes.

    Every agent faces the same episodes (contexts, rewards) per seed, so the per-seed difference removes
    the episode-to-episode variation that the unpaired standard errors contain."""
    difference = normalised - reference
    stderr = float(np.std(difference, ddof=1) / np.sqrt(len(difference))) if len(difference) > 1 else float("nan")
    return {"mean": float(np.mean(difference)), "stderr": stderr}


def summarise(trajectory: Trajectory) -> Dict[str, object]:
    normalised = normalised_regret(trajectory)
    num_seeds = len(normalised)
    stderr = float(np.std(normalised, ddof=1) / np.sqrt(num_seeds)) if num_seeds > 1 else float("nan")
    cumulative = trajectory.regret.sum(axis=-1)
    return {
        "normalised_regret": float(np.mean(normalised)),
        "normalised_regret_stderr": stderr,
        "normalised_regret_per_seed": normalised.tolist(),
        "cumulative_regret": float(np.mean(cumulative)),
        "cumulative_regret_per_seed": cumulative.tolist(),
        "optimal_action_rate": float(np.mean(trajectory.optimal)),
        "uniform_expected_regret": float(np.mean(trajectory.uniform_regret.sum(axis=-1))),
        # Training steps skipped for a non-finite loss or gradient, summed over seeds, and the seeds with any.
        "skipped_steps": int(np.sum(trajectory.skipped_steps)),
        "seeds_with_skipped_steps": int(np.count_nonzero(trajectory.skipped_steps)),
        "skipped_steps_per_seed": np.asarray(trajectory.skipped_steps).tolist(),
    }


def curve(trajectory: Trajectory):
    """Mean and standard error over seeds of the cumulative regret at every step."""
    cumulative = np.cumsum(trajectory.regret, axis=-1)
    num_seeds = cumulative.shape[0]
    stderr = cumulative.std(axis=0, ddof=1) / np.sqrt(num_seeds) if num_seeds > 1 else np.zeros(cumulative.shape[1])
    return cumulative.mean(axis=0), stderr


def format_table(results: Dict[str, Dict[str, object]], title: str) -> str:
    lines = [title, f"{'agent':<14} {'regret (uniform=100)':>22} {'minus greedy (paired)':>22} {'cum. regret':>12} "
                    f"{'optimal':>8} {'skipped':>8} {'compile s':>10} {'run s':>8}"]
    for name, r in sorted(results.items(), key=lambda item: item[1]["normalised_regret"]):
        versus = r.get("minus_greedy")
        versus = f"{versus['mean']:>13.1f} ± {versus['stderr']:<6.1f}" if versus else f"{'':>22}"
        lines.append(f"{name:<14} {r['normalised_regret']:>13.1f} ± {r['normalised_regret_stderr']:<6.1f} {versus} "
                     f"{r['cumulative_regret']:>12.1f} {r['optimal_action_rate']:>8.3f} {r['skipped_steps']:>8d} "
                     f"{r['compile_seconds']:>10.1f} "
                     f"{r['run_seconds']:>8.2f}")
    return "\n".join(lines)


def plot(path, curves: Dict[str, tuple], results: Dict[str, Dict[str, object]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    order = sorted(results, key=lambda name: results[name]["normalised_regret"])
    colours = [plt.cm.tab20(index % 20) if len(order) > 10 else f"C{index}" for index in range(len(order))]
    for index, name in enumerate(order):
        mean, stderr = curves[name]
        steps = np.arange(1, len(mean) + 1)
        left.plot(steps, mean, label=name, color=colours[index], ls="--" if name == "uniform" else "-")
        left.fill_between(steps, mean - stderr, mean + stderr, color=colours[index], alpha=0.2)
    left.set_xlabel("step t")
    left.set_ylabel("cumulative regret (mean ± s.e. over seeds)")
    left.set_title(title)
    left.legend(fontsize=7, loc="upper left")
    values = [results[name]["normalised_regret"] for name in order]
    errors = [results[name]["normalised_regret_stderr"] for name in order]
    right.barh(order, values, xerr=np.nan_to_num(errors), color=colours)
    right.axvline(100.0, color="k", lw=1, ls="--")
    right.invert_yaxis()
    right.set_xlabel("cumulative regret, uniform = 100")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
