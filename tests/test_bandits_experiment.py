"""End-to-end runs of experiments/bandits.py at tiny settings (the real runs are in the closing report)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bandits.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bandits_experiment", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = ["--horizon", "40", "--retrain-every", "20", "--train-steps", "2", "--batch-size", "8", "--hidden", "8",
        "--seeds", "2", "--fast-compile"]


def check_run_directory(out, agents):
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["agents"]) == sorted(agents)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["agent"] for r in records if r["split"] == "seed"} == set(agents)
    assert (out / "regret.png").stat().st_size > 0
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["agents"] == agents
    return summary


def test_wheel_end_to_end(tmp_path):
    agents = ["uniform", "greedy"]
    results = load_script().main(["--bandit", "wheel", "--delta", "0.7", "--agents", "uniform", "--agents",
                                  "greedy", "--out", str(tmp_path), *TINY])
    check_run_directory(tmp_path, agents)
    for name in agents:
        assert len(results[name]["normalised_regret_per_seed"]) == 2
        assert np.isfinite(results[name]["normalised_regret"]) and results[name]["normalised_regret"] >= 0
    # The uniform agent's regret is normalised by the uniform policy's expected regret: about 100.
    assert 60 < results["uniform"]["normalised_regret"] < 140


def test_mushroom_end_to_end(tmp_path, shared_data_dir):
    agents = ["uniform", "neural_linear"]
    results = load_script().main(["--bandit", "mushroom", "--agents", ",".join(agents), "--out", str(tmp_path),
                                  "--data-dir", str(shared_data_dir), *TINY])
    summary = check_run_directory(tmp_path, agents)
    assert summary["bandit"] == "mushroom"
    assert all(np.isfinite(results[name]["normalised_regret"]) for name in agents)


def test_bad_arguments_fail_with_a_message(tmp_path):
    script = load_script()
    with pytest.raises(SystemExit, match="unknown agent"):
        script.main(["--agents", "thompson", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="multiple of retrain_every"):
        script.main(["--agents", "uniform", "--horizon", "45", "--retrain-every", "20", "--out", str(tmp_path)])
