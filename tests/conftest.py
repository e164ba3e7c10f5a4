"""Shared pytest fixtures."""

from pathlib import Path

import pytest

# The benchmark data every developer and CI run has next to the repository
# (see ../shared/README.md); never copied into the repository.
SHARED_DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Root of the real benchmark data, which must be there: a missing root fails the data tests.

    CI and every development machine have ``../shared`` beside the checkout, so its absence is a broken
    setup, not an optional one. A clone that deliberately runs without the data deselects these tests
    with ``-m "not slow and not data"`` (every test that takes this fixture carries the ``data`` marker).
    """
    if not SHARED_DATA_DIR.is_dir():
        pytest.fail(f"real benchmark data not found at {SHARED_DATA_DIR.resolve()}: put ../shared/data beside the "
                    "checkout (see ../shared/README.md), or deselect the data tests with -m \"not slow and not data\"")
    return SHARED_DATA_DIR


def pytest_collection_modifyitems(config, items):
    # Marks every test that needs the shared data, so that a clone without it can deselect them explicitly.
    for item in items:
        if "shared_data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)


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
