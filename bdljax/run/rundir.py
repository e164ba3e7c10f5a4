"""Run directories: the record every table and figure is built from.

A run directory holds

* ``config.json``: the whole configuration, seeds, command line, versions of
  python / jax / jaxlib / flax / optax / blackjax / numpy, device kind and
  count, the git commit (when the code is in a git checkout) and start time;
* ``metrics.jsonl``: one JSON object per evaluation (epoch or step, split,
  method, each metric), appended as the run goes;
* ``summary.json``: the final metrics;
* figures (PNG) beside them.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

_VERSIONED = ("jax", "jaxlib", "flax", "optax", "blackjax", "numpy", "scipy")


def environment() -> Dict[str, Any]:
    """Versions, devices and git commit of this process."""
    import jax

    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    devices = jax.devices()
    return {
        "versions": versions,
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "git_commit": git_commit(),
        "argv": sys.argv,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def git_commit() -> Optional[str]:
    """The commit of the checkout this file lives in, with ``+dirty`` when modified; None outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode:
            return None
        # Untracked files count too (a new module the run imports); ignored ones (runs/, .venv) do not.
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def to_json(value: Any) -> Any:
    """Convert arrays, numpy scalars and NamedTuples into plain JSON values (NaN/inf become strings)."""
    if hasattr(value, "_asdict"):
        value = value._asdict()
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "shape") or isinstance(value, (np.generic,)):
        array = np.asarray(value)
        return to_json(array.item() if array.ndim == 0 else array.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN; keep it visible instead of dropping it
    return value


class RunLogger:
    """Writes one run directory.

    >>> logger = RunLogger("runs/demo", config={"seed": 0})
    >>> logger.log({"epoch": 1, "split": "test", "method": "map", "rmse": 0.3})
    >>> logger.write_summary({"map": {"rmse": 0.3}})
    """

    def __init__(self, out_dir, config: Dict[str, Any]):
        self.directory = Path(out_dir)
        self.directory.mkdir(parents=True, exist_ok=True)
        # A reused directory must not pair this run's config with an earlier run's summaries.
        for stale in self.directory.glob("summary*.json"):
            stale.unlink()
        self.config = {"config": to_json(config), "environment": environment()}
        (self.directory / "config.json").write_text(json.dumps(self.config, indent=2))
        self._metrics = self.directory / "metrics.jsonl"
        self._metrics.write_text("")

    def log(self, record: Dict[str, Any]) -> None:
        """Append one evaluation record to ``metrics.jsonl``."""
        with self._metrics.open("a") as stream:
            stream.write(json.dumps(to_json(record)) + "\n")

    def write_summary(self, summary: Dict[str, Any]) -> Path:
        """Write ``summary.json`` (the final metrics)."""
        path = self.directory / "summary.json"
        path.write_text(json.dumps(to_json(summary), indent=2))
        return path

    def path(self, name: str) -> Path:
        """Where to put an artefact (a figure) of this run."""
        return self.directory / name


def read_jsonl(path) -> list:
    """Read a ``metrics.jsonl`` back into a list of dicts."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def default_run_dir(experiment: str, root: str = "runs") -> Path:
    """``runs/<experiment>-<UTC timestamp>``."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{experiment}-{stamp}"
