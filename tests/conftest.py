"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

# The benchmark data every developer and CI run has next to the repository
# (see ../shared/README.md); never copied into the repository.
SHARED_DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Root of the real benchmark data.

    A checkout without ``../shared`` (a fresh clone elsewhere) skips the data tests, unless
    ``BDLJAX_REQUIRE_DATA=1`` says the data must be there, which turns the skip into a failure.
    """
    if not SHARED_DATA_DIR.is_dir():
        message = f"real benchmark data not found at {SHARED_DATA_DIR.resolve()} (see ../shared/README.md)"
        if os.environ.get("BDLJAX_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA_DIR


@pytest.fixture(scope="session")
def shared_path(shared_data_dir):
    """``shared_path(*parts)``: a dataset under the shared data root, which must be there.

    Once the root exists, a missing dataset is a broken data directory, not an optional one: the test fails,
    naming what is missing, instead of skipping silently.
    """

    def require(*parts: str) -> Path:
        path = shared_data_dir.joinpath(*parts)
        if not path.exists():
            pytest.fail(f"{path.resolve()} is missing from the shared benchmark data at {shared_data_dir.resolve()}; "
                        "put the dataset there in its standard layout (see ../shared/README.md)")
        return path

    return require
