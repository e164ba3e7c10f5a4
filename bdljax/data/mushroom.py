"""UCI Mushroom, the contextual-bandit benchmark of Blundell et al. (2015) and Riquelme et al. (2018).

``<data dir>/mushroom/agaricus-lepiota.data``; `load_mushroom` one-hot encodes the 22 attribute columns.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from bdljax.data.files import require_files, resolve_data_dir

__all__ = ["MushroomDataset", "load_mushroom"]


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
    require_files([path], "mushroom")
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
