"""Tests of bdljax.data.uci: the real UCI benchmarks from ../shared/data plus hand-made folders."""

from pathlib import Path

import numpy as np
import pytest

from bdljax import data

UCI_DATASETS = [
    "concrete", "kin8nm", "naval-propulsion-plant", "power-plant",
    "protein-tertiary-structure", "wine-quality-red",
]


# --------------------------------------------------------------------------
# Real UCI data
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def concrete(shared_data_dir, shared_path):
    shared_path("uci", "concrete")
    return data.load_uci("concrete", data_dir=shared_data_dir)


def test_list_uci_datasets_finds_the_six_benchmarks(shared_data_dir, shared_path):
    shared_path("uci")
    assert set(UCI_DATASETS) <= set(data.list_uci_datasets(shared_data_dir))


def test_concrete_shapes_and_metadata(concrete):
    assert concrete.name == "concrete"
    assert concrete.x.shape == (1030, 8) and concrete.x.dtype == np.float32
    assert concrete.y.shape == (1030,) and concrete.y.dtype == np.float32
    assert concrete.num_splits == 20
    assert (concrete.n_hidden, concrete.n_epochs) == (50, 40)
    assert concrete.dropout_rates == (0.005, 0.01, 0.05, 0.1)
    assert concrete.tau_values == (0.025, 0.05, 0.075)
    # First row of data.txt: cement 540.0, ..., age 28, strength 79.99.
    np.testing.assert_allclose(concrete.x[0, [0, 7]], [540.0, 28.0])
    np.testing.assert_allclose(concrete.y[0], 79.99, rtol=1e-6)


def test_concrete_splits_are_disjoint_and_cover_all_rows(concrete):
    for split_index in range(concrete.num_splits):
        split = data.uci_split(concrete, split_index)
        assert split.x_train.shape == (927, 8) and split.y_train.shape == (927,)
        assert split.x_test.shape == (103, 8) and split.y_test.shape == (103,)
        assert np.intersect1d(split.train_index, split.test_index).size == 0
        covered = np.union1d(split.train_index, split.test_index)
        np.testing.assert_array_equal(covered, np.arange(1030))
        np.testing.assert_array_equal(split.x_test, concrete.x[split.test_index])
        np.testing.assert_array_equal(split.y_train, concrete.y[split.train_index])


def test_standardise_uses_training_statistics_only(concrete):
    split = data.uci_split(concrete, 0)
    standardised = data.standardise(split)

    np.testing.assert_allclose(standardised.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(standardised.x_train.std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(standardised.y_train.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(standardised.y_train.std(), 1.0, atol=1e-5)
    # The test part is moved by the training statistics, so its own are not 0/1.
    assert abs(float(standardised.y_test.mean())) > 1e-3
    assert np.all(np.abs(standardised.x_test.mean(axis=0)) > 1e-4)

    np.testing.assert_allclose(standardised.x_mean, split.x_train.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(standardised.y_std, split.y_train.std(), rtol=1e-5)
    # Original units come back from the carried statistics.
    recovered_y_test = standardised.y_mean + standardised.y_std * standardised.y_test
    np.testing.assert_allclose(recovered_y_test, split.y_test, rtol=1e-5)


def test_standardise_guards_naval_constant_column(shared_data_dir, shared_path):
    shared_path("uci", "naval-propulsion-plant")
    naval = data.load_uci("naval-propulsion-plant", data_dir=shared_data_dir)
    assert naval.x.shape == (11934, 16)
    standardised = data.standardise(data.uci_split(naval, 0))
    # Columns 8 and 11 are constant; 11 (0.998) has a float64 std of 0 or ~1e-16
    # depending on summation order, so the guard must be a tolerance, not `== 0`.
    constant_columns = np.flatnonzero(np.ptp(naval.x, axis=0) == 0)
    np.testing.assert_array_equal(constant_columns, [8, 11])
    np.testing.assert_array_equal(standardised.x_std[constant_columns], 1.0)
    np.testing.assert_array_equal(standardised.x_train[:, constant_columns], 0.0)
    for array in standardised:
        data.check_finite("naval standardised", array)


# --------------------------------------------------------------------------
# Hand-made UCI folders: errors must say what is wrong
# --------------------------------------------------------------------------


def write_uci_dataset(root: Path, name: str = "toy", num_rows: int = 10, num_splits: int = 2) -> Path:
    """Writes a small dataset in the standard layout: 2 features, target in column 2."""
    directory = root / "uci" / name / "data"
    directory.mkdir(parents=True)
    table = np.arange(num_rows * 3, dtype=np.float64).reshape(num_rows, 3)
    np.savetxt(directory / "data.txt", table)
    (directory / "index_features.txt").write_text("0\n1\n")
    (directory / "index_target.txt").write_text("2\n")
    (directory / "n_splits.txt").write_text(f"{num_splits}\n")
    (directory / "n_hidden.txt").write_text("50\n")
    (directory / "n_epochs.txt").write_text("40\n")
    (directory / "dropout_rates.txt").write_text("0.01\n0.1\n")
    (directory / "tau_values.txt").write_text("0.5\n1.0\n")
    for split_index in range(num_splits):
        rows = np.roll(np.arange(num_rows), split_index)
        np.savetxt(directory / f"index_train_{split_index}.txt", rows[:8], fmt="%d")
        np.savetxt(directory / f"index_test_{split_index}.txt", rows[8:], fmt="%d")
    return directory


def test_any_folder_in_the_standard_layout_loads(tmp_path):
    write_uci_dataset(tmp_path, name="my-new-benchmark")
    assert data.list_uci_datasets(tmp_path) == ["my-new-benchmark"]
    dataset = data.load_uci("my-new-benchmark", data_dir=tmp_path)
    assert dataset.x.shape == (10, 2) and dataset.y.shape == (10,)
    assert dataset.num_splits == 2 and dataset.tau_values == (0.5, 1.0)
    split = data.uci_split(dataset, 1)
    np.testing.assert_array_equal(split.y_test, [23.0, 26.0])  # rows 7 and 8, column 2.


def test_missing_index_file_is_named(tmp_path):
    directory = write_uci_dataset(tmp_path)
    (directory / "index_test_1.txt").unlink()
    with pytest.raises(data.DataNotFoundError, match=r"index_test_1\.txt.*BDLJAX_DATA_DIR"):
        data.load_uci("toy", data_dir=tmp_path)


def test_split_index_out_of_range_names_valid_range(tmp_path):
    write_uci_dataset(tmp_path)
    dataset = data.load_uci("toy", data_dir=tmp_path)
    for bad_index in (2, -1):
        with pytest.raises(ValueError, match=r"valid split indices are 0\.\.1"):
            data.uci_split(dataset, bad_index)


def test_nan_in_data_is_reported_with_counts(tmp_path):
    directory = write_uci_dataset(tmp_path)
    table = np.loadtxt(directory / "data.txt")
    table[3, 1] = np.nan
    table[5, 1] = np.inf
    np.savetxt(directory / "data.txt", table)
    with pytest.raises(ValueError, match=r"2 non-finite .* in 2 of 10 rows and 1 of 3 columns"):
        data.load_uci("toy", data_dir=tmp_path)


def test_train_test_overlap_is_rejected(tmp_path):
    directory = write_uci_dataset(tmp_path)
    (directory / "index_test_0.txt").write_text("0\n9\n")  # Row 0 is also in train.
    dataset = data.load_uci("toy", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"overlap in 1 rows"):
        data.uci_split(dataset, 0)


def test_index_outside_the_data_is_rejected(tmp_path):
    directory = write_uci_dataset(tmp_path)
    (directory / "index_test_0.txt").write_text("8\n10\n")
    dataset = data.load_uci("toy", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"index_test_0\.txt.*outside 0\.\.9"):
        data.uci_split(dataset, 0)


def test_env_var_is_used_and_never_silently_skipped(tmp_path, monkeypatch):
    write_uci_dataset(tmp_path)
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(tmp_path))
    assert data.resolve_data_dir() == tmp_path
    assert data.load_uci("toy").x.shape == (10, 2)
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(tmp_path / "typo"))
    with pytest.raises(data.DataNotFoundError, match="environment variable BDLJAX_DATA_DIR"):
        data.resolve_data_dir()


# --------------------------------------------------------------------------
# Validation split
# --------------------------------------------------------------------------


def test_validation_split_is_deterministic_and_partitions():
    x = np.arange(50, dtype=np.float32).reshape(25, 2)
    y = np.arange(25, dtype=np.float32)
    first = data.validation_split(x, y, 0.2, key_or_seed=3)
    again = data.validation_split(x, y, 0.2, key_or_seed=3)
    other = data.validation_split(x, y, 0.2, key_or_seed=4)

    assert first.x_train.shape == (20, 2) and first.y_test.shape == (5,)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.test_index, other.test_index)
    np.testing.assert_array_equal(np.union1d(first.train_index, first.test_index), np.arange(25))
    np.testing.assert_array_equal(first.y_test, y[first.test_index])


def test_validation_split_accepts_jax_keys():
    import jax

    x, y = np.zeros((30, 1)), np.arange(30.0)
    for key in (jax.random.key(0), jax.random.PRNGKey(0)):
        first = data.validation_split(x, y, key_or_seed=key)
        again = data.validation_split(x, y, key_or_seed=key)
        np.testing.assert_array_equal(first.test_index, again.test_index)


def test_validation_split_rejects_empty_parts():
    with pytest.raises(ValueError, match="at least one example"):
        data.validation_split(np.zeros((3, 1)), np.zeros(3), 0.1, key_or_seed=0)


def test_unknown_uci_name_lists_the_datasets_and_paths_are_refused(tmp_path):
    write_uci_dataset(tmp_path, name="toy")
    with pytest.raises(data.DataNotFoundError, match=r"no UCI dataset 'concret'.*\['toy'\]"):
        data.load_uci("concret", data_dir=tmp_path)
    for bad in ("", "..", "../mnist", "toy/data"):
        with pytest.raises(ValueError, match="one folder name"):
            data.load_uci(bad, data_dir=tmp_path)


def test_empty_index_file_and_non_finite_splits_are_refused(tmp_path):
    """An empty training index once gave NaN statistics, and NaN inputs to standardise all-NaN data, silently."""
    directory = write_uci_dataset(tmp_path)
    (directory / "index_train_1.txt").write_text("")
    with pytest.raises(ValueError, match=r"index_train_1\.txt is empty"):
        data.uci_split(data.load_uci("toy", data_dir=tmp_path), 1)
    split = data.uci_split(data.load_uci("toy", data_dir=tmp_path), 0)
    with pytest.raises(ValueError, match="x_train"):
        data.standardise(split._replace(x_train=np.where(np.arange(16).reshape(8, 2) == 3, np.nan, split.x_train)))
