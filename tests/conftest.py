"""Shared pytest fixtures."""

from pathlib import Path

import pytest

# The benchmark data every developer and CI run has next to the repository
# (see ../shared/README.md); never copied into the repository.
SHARED_DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Root of the real benchmark data; skips the test when it is absent."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA_DIR.resolve()}")
    return SHARED_DATA_DIR
