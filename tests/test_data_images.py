"""Tests of bdljax.data.images: IDX files (synthetic edge cases), MNIST and Fashion-MNIST from ../shared/data."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from bdljax import data
from bdljax.data import images as image_files


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, compress: bool = True) -> None:
    """Writes a uint8 array as IDX; `magic` overrides the correct magic number."""
    if magic is None:
        magic = (image_files._IDX_UNSIGNED_BYTE << 8) | array.ndim
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
    monkeypatch.setattr(image_files, "_IDX_DOWNLOAD_URLS", urls)

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
