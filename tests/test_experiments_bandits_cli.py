"""End-to-end runs of ``python -m experiments.bandits`` and of the bandit analysis scripts at tiny settings."""

import json
import runpy
import sys

import jax
import numpy as np
import pytest

from experiments.bandits import cli
from experiments.bandits.environments import wheel_bandit
from experiments.bandits.registry import make_agent
from experiments.bandits.settings import BANDIT_DEFAULTS
from scripts import mcdropout_spread, wheel_exploration, wheel_ring_probe


TINY = ["--horizon", "40", "--retrain-every", "20", "--train-steps", "2", "--batch-size", "8", "--hidden", "8",
        "--seeds", "2", "--fast-compile"]


def check_run_directory(out, agents, bandit_names, figures):
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["bandits"]) == sorted(bandit_names)
    for name in bandit_names:
        assert sorted(summary["bandits"][name]) == sorted(agents)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {(r["bandit"], r["agent"]) for r in records if r["split"] == "seed"} == {
        (b, a) for b in bandit_names for a in agents}
    for figure in figures:
        assert (out / figure).stat().st_size > 0
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["agents"] == agents
    return summary


def test_wheel_end_to_end_two_deltas_one_compile(tmp_path):
    agents = ["uniform", "greedy"]
    results = cli.main(["--bandit", "wheel", "--delta", "0.7,0.9", "--agents", "uniform", "--agents",
                                  "greedy", "--out", str(tmp_path), *TINY])
    names = ["wheel(delta=0.7)", "wheel(delta=0.9)"]
    summary = check_run_directory(tmp_path, agents, names, ["regret_delta0.70.png", "regret_delta0.90.png"])
    for bandit in names:
        for name in agents:
            scores = results[bandit][name]
            assert len(scores["normalised_regret_per_seed"]) == 2
            assert scores["skipped_steps"] == 0 and scores["skipped_steps_per_seed"] == [0, 0]
            assert np.isfinite(scores["normalised_regret"]) and scores["normalised_regret"] >= 0
        # The uniform agent's regret is normalised by the uniform policy's expected regret: about 100.
        assert 60 < results[bandit]["uniform"]["normalised_regret"] < 140
        # Paired difference to greedy: the per-seed differences' mean.
        paired = summary["bandits"][bandit]["uniform"]["minus_greedy"]
        expected = np.mean(np.subtract(results[bandit]["uniform"]["normalised_regret_per_seed"],
                                       results[bandit]["greedy"]["normalised_regret_per_seed"]))
        assert paired["mean"] == pytest.approx(expected)
    # One program per agent serves both δ (δ is an argument): the compile time is shared.
    assert results[names[0]]["greedy"]["compile_seconds"] == results[names[1]]["greedy"]["compile_seconds"]
    # Different δ, same contexts: δ = 0.9 hides more of the big rewards, so uniform's regret budget is smaller.
    assert (results[names[1]]["uniform"]["uniform_expected_regret"] < results[names[0]]["uniform"]["uniform_expected_regret"])


def test_mushroom_end_to_end_with_the_papers_training_recipe(tmp_path, shared_data_dir):
    agents = ["uniform", "neural_linear", "mcdropout"]  # mcdropout: concrete dropout, the mushroom default
    results = cli.main(["--bandit", "mushroom", "--agents", ",".join(agents), "--out", str(tmp_path),
                                  "--data-dir", str(shared_data_dir), "--optimizer", "rmsprop", "--learning-rate", "0.1",
                                  "--lr-decay", "0.5", "--max-grad-norm", "5", "--init-scale", "0.3", *TINY])
    check_run_directory(tmp_path, agents, ["mushroom"], ["regret.png"])
    assert all(np.isfinite(results["mushroom"][name]["normalised_regret"]) for name in agents)


def test_bad_arguments_fail_with_a_message(tmp_path):
    script = cli
    with pytest.raises(SystemExit, match="unknown agent"):
        script.main(["--agents", "thompson", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="multiple of retrain_every"):
        script.main(["--agents", "uniform", "--horizon", "45", "--retrain-every", "20", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--delta"):
        script.main(["--agents", "uniform", "--delta", "0.5,1.5", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="lr_decay"):
        script.main(["--agents", "greedy", "--lr-decay", "-1", "--out", str(tmp_path)])
    # The last agent's bad setting stops the run before the first agent runs (nothing printed, no run dir).
    with pytest.raises(SystemExit, match="dropout_rate"):
        script.main(["--agents", "uniform,greedy,mcdropout", "--dropout-rate", "1.5", "--out", str(tmp_path / "late")])
    assert not (tmp_path / "late").exists()
    with pytest.raises(SystemExit, match="max_grad_norm"):
        script.main(["--agents", "greedy", "--max-grad-norm", "-5", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="prior_scale"):
        script.main(["--agents", "sgld", "--prior-scale", "-1", "--out", str(tmp_path)])


def test_per_bandit_defaults_reach_the_agents_and_flags_override_them(tmp_path):
    """BANDIT_DEFAULTS (chosen on pilot seeds) fill every flag left unset; an explicit flag wins."""
    script = cli
    for bandit, extra, expected in [("wheel", [], BANDIT_DEFAULTS["wheel"]),
                                    ("wheel", ["--point-prior", "gaussian", "--sghmc-step-size", "0.5"],
                                     {**BANDIT_DEFAULTS["wheel"], "point_prior": "gaussian",
                                      "sghmc_step_size": 0.5}),
                                    ("wheel", ["--learned-noise", "on"],
                                     {**BANDIT_DEFAULTS["wheel"], "learned_noise": True}),
                                    ("wheel", ["--ensemble-reward-perturbation", "0", "--bootstrap-probability", "0.5"],
                                     {**BANDIT_DEFAULTS["wheel"], "ensemble_reward_perturbation": 0.0,
                                      "bootstrap_probability": 0.5}),
                                    ("wheel", ["--dropout-input", "on", "--dropout-rate", "0.1"],
                                     {**BANDIT_DEFAULTS["wheel"], "dropout_input": True, "dropout_rate": 0.1}),
                                    ("wheel", ["--concrete-dropout", "on"],
                                     {**BANDIT_DEFAULTS["wheel"], "concrete_dropout": True})]:
        out = tmp_path / f"{bandit}{len(extra)}"
        script.main(["--bandit", bandit, "--agents", "uniform", "--out", str(out), *TINY, *extra])
        settings = json.loads((out / "config.json").read_text())["config"]["settings"]
        assert {key: settings[key] for key in expected} == expected
    assert BANDIT_DEFAULTS["wheel"]["point_prior"] != BANDIT_DEFAULTS["mushroom"]["point_prior"]
    with pytest.raises(SystemExit):
        script.main(["--bandit", "wheel", "--agents", "uniform", "--out", str(tmp_path / "bad"), *TINY,
                     "--learned-noise", "yes"])


def test_wheel_exploration_counts_discoveries_and_exploitation():
    """scripts/wheel_exploration.py: a hand-worked episode, and a tiny run on the episodes simulate() faces."""
    script = wheel_exploration
    # One episode, 8 steps. Quadrant 0's ring contexts at steps 1, 3, 6: missed at 1, found at 3, hit at 6.
    # Quadrant 2's ring context at step 4: never found. Steps 0, 2, 5, 7 are inside (ignored).
    quadrant = np.array([[0, 0, 1, 0, 2, 3, 0, 1]])
    ring = np.array([[0, 1, 0, 1, 1, 0, 1, 0]], dtype=bool)
    actions = np.array([[4, 4, 1, 0, 4, 3, 0, 4]])
    figures = script.quadrant_exploration(actions, quadrant, ring)
    assert figures == {"quadrants": 4, "quadrants_found": 1, "missed_before_discovery": 2,
                       "hit_rate_after_discovery": 1.0, "median_discovery_step": 3.0}
    with pytest.raises(ValueError, match="shape"):
        script.quadrant_exploration(actions, quadrant[:, :4], ring)
    results = script.main(["--agents", "uniform,greedy", "--seeds", "2", "--horizon", "100"])
    for figures in results.values():
        assert 0 <= figures["quadrants_found"] <= 8 and figures["missed_before_discovery"] >= 0
    with pytest.raises(SystemExit, match="unknown agents"):
        script.main(["--agents", "oracle"])


def test_wheel_ring_probe_measures_the_chance_of_trying_a_ring_arm():
    """scripts/wheel_ring_probe.py: ring contexts lie on the annulus and the logged data inside the disc of
    radius δ with every arm pulled; the uniform agent tries the quadrant's arm with probability 1/5 (within 4
    binomial s.e.); a tiny run of the script and its bad-input check."""
    script = wheel_ring_probe
    delta = 0.9
    radius = np.linalg.norm(np.asarray(script.ring_contexts(jax.random.key(0), 2000, delta)), axis=-1)
    assert radius.min() > delta and radius.max() <= 1.0 + 1e-6
    # r² uniform on (δ², 1]: its mean is (δ² + 1)/2, standard error √((1 − δ²)²/12/2000).
    assert abs((radius**2).mean() - (delta**2 + 1) / 2) < 4 * (1 - delta**2) / np.sqrt(12 * 2000)
    wheel = wheel_bandit(delta)
    buffer = script.logged_inner_data(wheel, jax.random.key(1), 500, delta)
    assert np.linalg.norm(np.asarray(buffer.contexts), axis=-1).max() <= delta
    assert set(np.unique(np.asarray(buffer.actions))) == set(range(5))
    np.testing.assert_allclose(np.asarray(buffer.rewards).mean(), 1.04, atol=4 / np.sqrt(500))  # mean of (1,1,1,1,1.2), σ = 1

    uniform = make_agent("uniform", wheel, 100)
    p_quadrant, p_safe = script.probe(wheel, uniform, jax.random.key(2), num_data=100, delta=delta, retrain_every=50,
                                      contexts=200, draws=10)
    assert abs(float(p_quadrant) - 0.2) < 4 * np.sqrt(0.2 * 0.8 / 2000) and abs(float(p_safe) - 0.2) < 0.04
    results = script.main(["--agents", "greedy", "--num-data", "50", "--seeds", "2", "--contexts", "8", "--draws", "3",
                           "--delta", str(delta)])
    assert 0.0 <= results["greedy"]["50"]["p_quadrant_arm"] <= 1.0
    with pytest.raises(SystemExit, match="multiple"):
        script.main(["--num-data", "70"])
    with pytest.raises(SystemExit, match="unknown agents"):
        script.main(["--agents", "oracle"])


def test_mcdropout_spread_figures_on_a_hand_made_case_and_a_tiny_run():
    """scripts/mcdropout_spread.py: draw_spread on hand-made draws (2 draws × 2 contexts × 5 arms), and a tiny run."""
    script = mcdropout_spread
    outputs = np.ones((2, 2, 5))
    outputs[:, :, 4] = 1.2
    outputs[0, 0, 0] = 2.0  # draw 0 tries context 0's quadrant arm 0
    outputs[1, 1, 2] = 0.6
    figures = script.draw_spread(outputs, np.array([0, 2]))
    # f_safe − f_q: context 0: −0.8, 0.2; context 1: 0.2, 0.6 → mean 0.05.
    assert figures["gap"] == pytest.approx(0.05)
    assert figures["sd_q"] == pytest.approx(np.median([np.std([2.0, 1.0], ddof=1), np.std([1.0, 0.6], ddof=1)]))
    assert figures["sd_safe"] == 0.0 and figures["p_try"] == 0.25
    with pytest.raises(ValueError, match="draws, contexts, arms"):
        script.draw_spread(outputs[0], np.array([0, 2]))
    results = script.main(["--num-data", "50", "--seeds", "1", "--contexts", "4", "--draws", "3"])
    assert set(results) == {"shared", "per_arm"}
    for form in results.values():
        assert form["ring"]["sd_q"] >= 0 and 0 <= form["ring"]["p_try"] <= 1
    with pytest.raises(SystemExit, match="dropout-masks"):
        script.main(["--dropout-masks", "per_unit"])


def test_the_package_runs_as_a_command(monkeypatch, capsys):
    """``python -m experiments.bandits --help`` runs the package's ``__main__`` and prints the command line."""
    monkeypatch.setattr(sys, "argv", ["python -m experiments.bandits", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("experiments.bandits", run_name="__main__")
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: python -m experiments.bandits") and "--ensemble-reward-perturbation" in usage
