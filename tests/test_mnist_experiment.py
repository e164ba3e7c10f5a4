"""The MNIST script: a tiny end-to-end run on the real data (shift and OOD included) and its flag checks."""

import importlib
import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from bdljax import recipes
from bdljax.run.rundir import read_jsonl

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "experiments"))
import mnist  # noqa: E402


@pytest.fixture
def mnist_data_dir(shared_data_dir, shared_path):
    """The shared data root, with MNIST and Fashion-MNIST in it."""
    shared_path("mnist")
    shared_path("fashion_mnist")
    return shared_data_dir


def tiny_flags(data_dir, out, model_flags=("--model", "mlp", "--mlp-hidden", "8")):
    # Test, shift and OOD sets of one size: one predictive compilation per method instead of three.
    return [*model_flags, "--epochs", "1", "--train-size", "200", "--test-size", "100", "--shift-size", "100",
            "--shift-angles", "0,90", "--ood-size", "100", "--num-samples", "4", "--batch-size", "50",
            "--data-dir", str(data_dir), "--out", str(out)]


def test_end_to_end_map_and_ensemble(mnist_data_dir, tmp_path):
    data_dir = mnist_data_dir
    out = tmp_path / "run"
    summary = mnist.main(["--method", "map,ensemble", "--set", "ensemble.num_members=2", *tiny_flags(data_dir, out)])
    results = summary["results"]
    assert list(results) == ["map", "ensemble"]
    assert results["map"]["num_samples"] == 1 and results["ensemble"]["num_samples"] == 2
    for name, result in results.items():
        test = result["test"]
        assert 0.0 <= test["accuracy"] <= 1.0 and 0.0 <= test["ece"] <= 1.0 and 0.0 <= test["brier"] <= 2.0
        assert np.isfinite(test["nll"]) and test["nll"] > 0
        assert [r["angle"] for r in result["shift"]] == [0, 90]
        for score in mnist.OOD_SCORES:
            assert 0.0 <= result["ood"][score]["auroc"] <= 1.0 and 0.0 < result["ood"][score]["aupr"] <= 1.0
    # A point estimate has zero mutual information everywhere: an uninformative OOD score by construction.
    assert results["map"]["ood"]["mutual_information"]["auroc"] == 0.5
    assert results["ensemble"]["test"]["mean_mutual_information"] > 0
    records = read_jsonl(out / "metrics.jsonl")
    for name in results:
        splits = [r["split"] for r in records if r.get("method") == name]
        assert splits.count("train") == 1 and splits.count("test") == 1
        assert splits.count("shift") == 2 and splits.count("ood") == 1
    # Each ensemble member alone is scored too (the single-model baselines); their logits are the ensemble's.
    members = results["ensemble"]["members"]
    assert [m["member"] for m in members] == [0, 1]
    assert [r["member"] for r in records if r["split"] == "member_test"] == [0, 1]
    assert all(0.0 <= m["accuracy"] <= 1.0 and m["mean_mutual_information"] == 0.0 for m in members)
    assert "members" not in results["map"]
    for result in results.values():  # costs are recorded: wall and CPU seconds, compilations
        assert result["train_cpu_seconds"] > 0 and result["train_compilations"] >= 1
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["ece"] == "equal_width-15" and config["num_train"] == 200
    assert config["method_configs"]["ensemble"]["member_execution"] == "vmap"  # an MLP: members vmapped
    assert config["resolved_sample_chunk"] == 4 and config["backend"] == jax.default_backend()
    assert set(summary["goals"]) >= {"ensemble_accuracy_ge_0.992", "nll_below_map", "best_ood_auroc"}
    for figure in ("reliability.png", "shift.png", "ood.png"):
        assert (out / figure).stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["ece"] == "equal_width-15"


def test_bad_flags_fail_before_loading_data(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        mnist.main(["--method", "bogus", "--data-dir", str(tmp_path)])
    with pytest.raises(ValueError, match="not run"):
        mnist.main(["--method", "map", "--set", "ensemble.num_members=2", "--data-dir", str(tmp_path)])
    with pytest.raises(ValueError, match="--train-size must be at least 2"):
        mnist.main(["--method", "map", "--train-size", "1", "--data-dir", str(tmp_path)])
    with pytest.raises(ValueError, match="--steps-per-call must be positive, 0"):
        mnist.main(["--method", "map", "--steps-per-call", "-2", "--data-dir", str(tmp_path)])
    with pytest.raises(ValueError, match="METHOD.KEY=VALUE"):
        mnist.main(["--method", "map", "--set", "num_members=2", "--data-dir", str(tmp_path)])


def test_unknown_hyperparameter_names_the_accepted_ones(tmp_path):
    # Fails before the data is read: tmp_path holds no MNIST.
    with pytest.raises(ValueError, match=r"does not take \['bogus'\]; it accepts .*'learning_rate'"):
        mnist.main(["--method", "map", "--set", "map.bogus=1", *tiny_flags(tmp_path, tmp_path / "run")])


def test_method_config_passes_shared_flags_only_where_accepted():
    args = mnist.build_parser().parse_args(["--epochs", "3", "--num-samples", "7", "--model", "mlp"])
    config = mnist.method_config("map", args, {})
    assert config == {"num_epochs": 3, "batch_size": 100, "learning_rate": 1e-3}  # MAP takes no num_samples
    args.steps_per_call = 4
    assert mnist.method_config("map", args, {})["steps_per_call"] == 4
    for name in ("mfvi", "mcdropout", "sgld"):  # only recipes that take it get it
        config = mnist.method_config(name, args, {})
        assert ("steps_per_call" in config) == ("steps_per_call" in recipes.hyperparameters(name))
    args.steps_per_call = -1
    assert "steps_per_call" not in mnist.method_config("map", args, {})
    cnn = mnist.build_parser().parse_args(["--model", "cnn"])
    expected = 1 if jax.default_backend() == "cpu" else None
    assert mnist.method_config("map", cnn, {}).get("steps_per_call") == expected
    ensemble = mnist.method_config("ensemble", args, {"ensemble": {"num_members": 3}})
    assert ensemble["num_members"] == 3 and "num_samples" not in ensemble
    assert "member_execution" not in mnist.method_config("map", args, {})  # only the ensemble takes it


def test_cnn_on_cpu_defaults_to_sequential_members_and_one_sample_per_predictive_call():
    on_cpu = jax.default_backend() == "cpu"
    mlp = mnist.build_parser().parse_args(["--model", "mlp"])
    cnn = mnist.build_parser().parse_args(["--model", "cnn"])
    assert mnist.method_config("ensemble", mlp, {})["member_execution"] == "vmap"
    assert mnist.method_config("ensemble", cnn, {})["member_execution"] == ("sequential" if on_cpu else "vmap")
    assert (mnist.sample_chunk(mlp), mnist.sample_chunk(cnn)) == (4, 1 if on_cpu else 4)
    forced = mnist.build_parser().parse_args(["--model", "cnn", "--ensemble-execution", "vmap", "--sample-chunk", "3"])
    assert mnist.method_config("ensemble", forced, {})["member_execution"] == "vmap"
    assert mnist.sample_chunk(forced) == 3
    # --set wins over the flag
    assert mnist.method_config("ensemble", forced, {"ensemble": {"member_execution": "sequential"}})[
        "member_execution"] == "sequential"
    with pytest.raises(ValueError, match="--sample-chunk must be positive or 0"):
        mnist.check_args(mnist.build_parser().parse_args(["--sample-chunk", "-1"]))


def test_goal_checks():
    def result(accuracy, nll, ece, auroc):
        return {"test": {"accuracy": accuracy, "nll": nll, "ece": ece},
                "ood": {s: {"auroc": auroc} for s in mnist.OOD_SCORES}}

    goals = mnist.goal_checks({"map": result(0.99, 0.04, 0.005, 0.9), "ensemble": result(0.993, 0.03, 0.004, 0.96)})
    assert goals["ensemble_accuracy_ge_0.992"] and goals["ensemble_ece_le_0.01"]
    assert goals["nll_below_map"] == {"ensemble": True}
    assert goals["best_ood_auroc"] == {"auroc": 0.96, "method": "ensemble", "score": "entropy", "ge_0.95": True}


def importable_methods():
    names = []
    for name in ("map", "ensemble", "mfvi", "mcdropout", "sgld", "sghmc"):
        try:
            importlib.import_module(recipes.RECIPES[name].split(":")[0])
        except ModuleNotFoundError:
            continue
        names.append(name)
    return names


@pytest.mark.slow
def test_end_to_end_cnn_every_method(mnist_data_dir, tmp_path):
    """The LeNet-like CNN with every available method (minutes on two CPU cores)."""
    data_dir = mnist_data_dir
    names = importable_methods()
    summary = mnist.main(["--method", ",".join(names), "--set", "ensemble.num_members=2",
                          *tiny_flags(data_dir, tmp_path / "run", ("--model", "cnn", "--features", "4,8", "--hidden", "16"))])
    assert list(summary["results"]) == names
    for result in summary["results"].values():
        assert np.isfinite(result["test"]["nll"])
