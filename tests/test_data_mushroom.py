"""Tests of bdljax.data.mushroom: UCI Mushroom from ../shared/data."""

import numpy as np

from bdljax import data


def test_mushroom_one_hot_contexts(shared_data_dir, shared_path):
    shared_path("mushroom", "agaricus-lepiota.data")
    contexts, edible = data.load_mushroom(shared_data_dir)
    assert contexts.shape == (8124, 117) and contexts.dtype == np.float32
    assert edible.shape == (8124,) and edible.dtype == np.bool_
    np.testing.assert_array_equal(contexts.sum(axis=1), 22.0)
    assert set(np.unique(contexts)) == {0.0, 1.0}
    assert int(edible.sum()) == 4208  # 4208 edible, 3916 poisonous in the UCI file.
