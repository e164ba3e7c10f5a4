"""IDX image files: MNIST and Fashion-MNIST, and rotated images for dataset shift.

``<data dir>/mnist/`` and ``<data dir>/fashion_mnist/`` hold the four IDX files (gzip or plain) of MNIST
(LeCun, Cortes & Burges) and Fashion-MNIST (Xiao et al., 2017). `load_mnist` returns (N, 28, 28, 1) float32
images in [0, 1] and int32 labels; `rotate_images` is the rotated-MNIST shift (Ovadia et al., 2019).
"""

from __future__ import annotations

import gzip
import os
import urllib.request
import zlib
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import scipy.ndimage

from bdljax.data.files import DataNotFoundError, configured_data_dir, how_to_fix, require_files, resolve_data_dir

__all__ = [
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "read_idx",
    "ImageDataset",
    "IMAGE_DATASETS",
    "load_mnist",
    "rotate_images",
]

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
                + ". " + how_to_fix(name)
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
        root, _ = configured_data_dir(data_dir)
        _download_idx_files(root / name, name, list(_IDX_FILE_NAMES.values()))
    directory = resolve_data_dir(data_dir) / name
    paths = {field: directory / file_name for field, file_name in _IDX_FILE_NAMES.items()}
    require_files(list(paths.values()), name)

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
