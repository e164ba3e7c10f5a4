"""The MNIST script: a tiny end-to-end run on the real data (shift and OOD included) and its flag checks."""

import importlib
import json

import jax
import numpy as np
import pytest

import experiments.mnist as mnist
from bdljax import recipes
from bdljax.run.execution import Execution
from bdljax.run.rundir import read_jsonl


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
    # An MLP: the runner scans the epochs and vmaps the members, and records that it did.
    assert config["execution_override"] is None
    assert results["ensemble"]["diagnostics"]["execution"] == {"steps_per_call": None, "members": "vmap"}
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
    for bad in ("-2", "0", "epoch"):
        with pytest.raises(ValueError, match="--steps-per-call must be a positive integer, 'scan' or 'auto'"):
            mnist.main(["--method", "map", "--steps-per-call", bad, "--data-dir", str(tmp_path)])
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
    ensemble = mnist.method_config("ensemble", args, {"ensemble": {"num_members": 3}})
    assert ensemble["num_members"] == 3 and "num_samples" not in ensemble
    assert mnist.method_config("mcdropout", args, {})["dropout_rate"] == mnist.METHOD_DEFAULTS["mcdropout"]["dropout_rate"]
    assert mnist.method_config("mcdropout", args, {"mcdropout": {"dropout_rate": 0.5}})["dropout_rate"] == 0.5


def override(*flags):
    """The script's execution override for ``flags``, after its flag checks, as it computes it for its model."""
    args = mnist.build_parser().parse_args(list(flags))
    mnist.check_args(args)
    model = mnist.build_model(args)
    return mnist.execution_override(args, model, np.zeros((1, 28, 28, 1), np.float32))


def test_execution_is_the_runners_unless_a_flag_overrides_it():
    """Both flags auto: no override (the runner chooses per backend and network). A flag overrides its half
    only: the other half stays the runner's choice for this model on this backend."""
    on_cpu = jax.default_backend() == "cpu"
    assert override("--model", "cnn") is None and override("--model", "mlp") is None
    cnn_steps = 1 if on_cpu else None
    assert override("--model", "cnn", "--ensemble-execution", "vmap") == Execution(cnn_steps, "vmap")
    assert override("--model", "cnn", "--steps-per-call", "scan") == Execution(None, "sequential" if on_cpu else "vmap")
    assert override("--model", "mlp", "--steps-per-call", "4") == Execution(4, "vmap")
    assert override("--model", "mlp", "--steps-per-call", "5", "--ensemble-execution", "sequential") == Execution(
        5, "sequential")


def test_cnn_on_cpu_predicts_one_sample_per_call():
    on_cpu = jax.default_backend() == "cpu"
    mlp = mnist.build_parser().parse_args(["--model", "mlp"])
    cnn = mnist.build_parser().parse_args(["--model", "cnn"])
    assert (mnist.sample_chunk(mlp), mnist.sample_chunk(cnn)) == (4, 1 if on_cpu else 4)
    assert mnist.sample_chunk(mnist.build_parser().parse_args(["--model", "cnn", "--sample-chunk", "3"])) == 3
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
            importlib.import_module(recipes.RECIPES[name].target.split(":")[0])
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
