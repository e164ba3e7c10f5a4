"""Tests of experiments/sequences.py and its forecasting helpers: data windows, autoregressive forecasts against a
closed form, level forecasts, command line, tiny end-to-end runs, the seed table."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiments.sequences as sequences
import scripts.sequences_table as table_script
from bdljax.core import likelihoods
from bdljax.run.rundir import read_jsonl
from experiments import forecasting

# --------------------------------------------------------------------------
# Autoregressive multi-step forecasts against a closed form
# --------------------------------------------------------------------------


AR1_SIGMA = 0.5
AR1_LIKELIHOOD = likelihoods.gaussian(AR1_SIGMA)  # one instance: it is a static argument of the compiled forecast


def ar1_apply(params, windows, rng=None, train=False):
    """z_{t+1} ~ N(φ z_t, σ²) as a bdljax apply on (N, T) windows (the noise is the likelihood's)."""
    return params["phi"] * windows[:, -1:]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_autoregressive_forecast_matches_the_ar1_closed_form(seed):
    """For z_{t+h} | z_t under AR(1): mean φ^h z_t, variance σ² Σ_{k<h} φ^{2k}; one law per posterior sample."""
    sigma, horizon, paths = AR1_SIGMA, 4, 4000
    phis = jnp.asarray([0.9, -0.5])
    windows = jnp.asarray([[0.3, 2.0], [1.0, -1.0]])  # the last value, z_t = 2 and -1, is what AR(1) reads
    forecast = forecasting.autoregressive_forecast(
        ar1_apply, AR1_LIKELIHOOD, {"phi": phis}, windows, jax.random.key(seed),
        horizon=horizon, paths_per_sample=paths)
    assert forecast.draws.shape == (2 * paths, 2, horizon)
    draws = np.asarray(forecast.draws).reshape(2, paths, 2, horizon)  # sample-major
    for s, phi in enumerate(np.asarray(phis)):
        for h in range(1, horizon + 1):
            mean = phi**h * np.asarray(windows[:, -1])
            var = sigma**2 * sum(phi ** (2 * k) for k in range(h))
            sample = draws[s, :, :, h - 1]
            # 5 Monte Carlo standard errors: the mean's √(var/M), the variance's var·√(2/(M−1)).
            np.testing.assert_array_less(np.abs(sample.mean(axis=0) - mean), 5 * np.sqrt(var / paths))
            np.testing.assert_array_less(np.abs(sample.var(axis=0, ddof=1) - var), 5 * var * np.sqrt(2 / (paths - 1)))
    # Each step's Gaussian is the model's on the fed-back window (Rao–Blackwellised means).
    means = np.asarray(forecast.means).reshape(2, paths, 2, horizon)
    np.testing.assert_allclose(means[..., 1:], np.asarray(phis)[:, None, None, None] * draws[..., :-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(forecast.scales, sigma)


def test_forecast_keeps_one_weight_draw_per_trajectory_and_compiles_once():
    """A stochastic forward pass (MC dropout) gets the same rng at every step of a trajectory."""
    traces = []

    def apply(params, windows, rng=None, train=False):
        traces.append(1)
        offset = jax.random.normal(rng, ())  # stands in for a dropout mask: a function of the rng only
        return (params["phi"] * windows[:, -1] + offset)[:, None]

    likelihood = likelihoods.gaussian(0.1)
    windows = jnp.asarray([[0.0, 1.0]])
    run = lambda phi, key: forecasting.autoregressive_forecast(  # noqa: E731
        apply, likelihood, {"phi": phi}, windows, key, horizon=5, paths_per_sample=3, train=True)
    forecast = run(jnp.asarray([0.5, 0.5, 0.5]), jax.random.key(0))
    offsets = np.asarray(forecast.means[..., 1:] - 0.5 * forecast.draws[..., :-1])  # (P, 1, 4)
    np.testing.assert_allclose(offsets, offsets[..., :1] * np.ones_like(offsets), atol=1e-5)  # constant along a path
    per_sample = offsets[:, 0, 0].reshape(3, 3)
    np.testing.assert_allclose(per_sample, per_sample[:, :1] * np.ones_like(per_sample), atol=1e-5)  # shared by its paths
    assert np.ptp(per_sample[:, 0]) > 1e-3  # and different between posterior samples
    traced = len(traces)
    run(jnp.asarray([0.1, 0.2, 0.3]), jax.random.key(1))  # new values, same configuration: no new trace
    assert len(traces) == traced


def test_forecast_rejects_empty_horizons_classification_likelihoods_and_multivariate_windows():
    one = {"phi": jnp.ones(1)}
    with pytest.raises(ValueError, match="at least 1"):
        forecasting.autoregressive_forecast(ar1_apply, AR1_LIKELIHOOD, one, jnp.ones((2, 3)), jax.random.key(0),
                                            horizon=0)
    with pytest.raises(ValueError, match="at least 1"):
        forecasting.autoregressive_forecast(ar1_apply, AR1_LIKELIHOOD, one, jnp.ones((2, 3)), jax.random.key(0),
                                            horizon=2, paths_per_sample=0)
    with pytest.raises(ValueError, match="regression likelihood"):
        forecasting.autoregressive_forecast(ar1_apply, likelihoods.categorical(), one, jnp.ones((2, 3)),
                                            jax.random.key(0), horizon=2)
    with pytest.raises(ValueError, match="univariate"):
        forecasting.autoregressive_forecast(ar1_apply, likelihoods.gaussian(1.0), one, jnp.ones((2, 3, 1)),
                                            jax.random.key(0), horizon=2)


# --------------------------------------------------------------------------
# The script
# --------------------------------------------------------------------------


def test_co2_windows_align_inputs_targets_and_levels():
    rng = np.random.default_rng(0)
    levels = 300.0 + np.cumsum(rng.normal(0.1, 1.0, size=60))
    series = sequences.CO2Windows(levels, window=5, test_months=12, train_size=None)
    increments = np.diff(levels)
    # Standardised with the training increments only (those before the first test target).
    train_increments = increments[: len(levels) - 12 - 1]
    assert series.mean == pytest.approx(train_increments.mean()) and series.std == pytest.approx(train_increments.std())
    # One test window per test month; every training target precedes the test period.
    assert len(series.test_origins) == 12 and series.train_origins.max() + 1 < len(levels) - 12
    assert series.train_origins.min() == 5
    t = series.test_origins[3]
    np.testing.assert_allclose(series.windows(np.array([t]))[0], (increments[t - 5:t] - series.mean) / series.std, rtol=1e-5)
    # y_mean = y_t + μ and y_std = σ map a standardised target back to the next level (as predictive.evaluate does).
    z = series.targets(np.array([t]))[0]
    assert levels[t] + series.mean + series.std * z == pytest.approx(levels[t + 1], rel=1e-6)
    assert len(sequences.CO2Windows(levels, 5, 12, train_size=10).train_origins) == 10
    with pytest.raises(SystemExit, match="no training data"):
        sequences.CO2Windows(levels, window=40, test_months=30, train_size=None)


def test_level_forecast_accumulates_fed_back_increments():
    # Two trajectories, one origin, three steps, in standardised increments.
    draws = jnp.asarray([[[1.0, -1.0, 0.5]], [[0.0, 2.0, 0.0]]])
    means = jnp.asarray([[[0.2, 0.3, 0.4]], [[0.1, 0.1, 0.1]]])
    forecast = forecasting.Forecast(means, jnp.full_like(means, 0.5), draws)
    mean_ppm, scale_ppm = sequences.level_forecast(forecast, np.array([100.0]), 0.1, 2.0)
    # Path 0: levels after each drawn step 102.1, 100.2, 101.3; step h's mean sits on the level before it.
    np.testing.assert_allclose(mean_ppm[0, 0], [100 + 0.1 + 2 * 0.2, 102.1 + 0.1 + 2 * 0.3, 100.2 + 0.1 + 2 * 0.4], rtol=1e-6)
    np.testing.assert_allclose(mean_ppm[1, 0], [100.3, 100.1 + 0.3, 104.2 + 0.3], rtol=1e-6)
    np.testing.assert_allclose(scale_ppm, 1.0)


def test_command_line_fails_early_on_bad_choices():
    with pytest.raises(SystemExit, match="unknown method"):
        sequences.parse_args(["--method", "map,nonsense"])
    with pytest.raises(SystemExit, match="does not take"):
        sequences.parse_args(["--method", "map", "--set", "map.num_members=3"])
    with pytest.raises(SystemExit, match="METHOD.NAME=VALUE"):
        sequences.parse_args(["--method", "map", "--set", "num_epochs=3"])
    with pytest.raises(SystemExit, match="not among the methods"):
        sequences.parse_args(["--method", "map", "--set", "ensemble.num_members=3"])
    with pytest.raises(SystemExit):
        sequences.parse_args(["--epochs", "0"])
    args = sequences.parse_args(["--method", "map", "--method", "ensemble", "--set", "ensemble.num_members=3",
                                 "--hidden", "8,4", "--task", "co2"])
    assert args.methods == ["map", "ensemble"] and args.tasks == ["co2"] and args.hidden == (8, 4)
    assert args.hyperparameter_overrides == {"map": {}, "ensemble": {"num_members": 3}}
    assert sequences.task_settings(args, "co2")["hidden"] == (8, 4)
    # MC dropout's input mask: off for the univariate series (its one feature is the whole window), on for rows.
    assert not sequences.task_settings(args, "co2")["dropout_input"]
    assert sequences.task_settings(args, "mnist_rows")["dropout_input"]
    assert sequences.task_settings(sequences.parse_args(["--dropout-input", "on"]), "co2")["dropout_input"]
    with pytest.raises(SystemExit):
        sequences.parse_args(["--dropout-input", "maybe"])


def check_run_directory(out: Path, summary, task: str):
    assert json.loads((out / "summary.json").read_text()) == summary
    assert json.loads((out / "config.json").read_text())["config"]["tasks"] == [task]
    records = read_jsonl(out / "metrics.jsonl")
    assert any(r.get("split") == "train" and r.get("task") == task for r in records)
    assert any(r.get("split") == "test" and r.get("task") == task for r in records)


def test_co2_end_to_end_tiny(tmp_path):
    pytest.importorskip("statsmodels", reason="the co2 task reads the Mauna Loa series shipped with statsmodels")
    out = tmp_path / "co2"
    summary = sequences.main(["--task", "co2", "--method", "map", "--epochs", "2", "--hidden", "3", "--window", "6",
                              "--horizon", "1", "--test-months", "12", "--paths-per-sample", "2", "--out", str(out)])
    check_run_directory(out, summary, "co2")
    result = summary["co2"]["methods"]["map"]
    assert summary["co2"]["settings"]["num_test_windows"] == 12
    for forecast in ("one_step", "free_running"):
        metrics = result[forecast]
        assert np.isfinite(metrics["rmse"]) and np.isfinite(metrics["test_ll"])
        assert 0.0 <= metrics["coverage_50"] <= metrics["coverage_90"] <= metrics["coverage_95"] <= 1.0
    # With horizon 1 every test window is an origin, and the first fed-back step is the one-step forecast:
    # the iterated forecaster and the shared predictive must agree.
    for name in ("rmse", "test_ll", "coverage_95"):
        assert result["multi_step"]["h1"][name] == pytest.approx(result["one_step"][name], rel=1e-4, abs=1e-4)
    assert (out / "co2_forecast.png").stat().st_size > 0


def test_mnist_rows_end_to_end_tiny(tmp_path, shared_data_dir):
    out = tmp_path / "mnist"
    summary = sequences.main(["--task", "mnist_rows", "--method", "map", "--epochs", "1", "--train-size", "64",
                              "--test-size", "32", "--hidden", "4", "--batch-size", "32",
                              "--data-dir", str(shared_data_dir), "--out", str(out)])
    check_run_directory(out, summary, "mnist_rows")
    result = summary["mnist_rows"]["methods"]["map"]
    assert 0.0 <= result["accuracy"] <= 1.0 and np.isfinite(result["nll"]) and 0.0 <= result["ece"] <= 1.0
    assert 0.0 <= result["ood_auroc_entropy"] <= 1.0
    assert result["num_samples"] == 1 and summary["mnist_rows"]["settings"]["test_size"] == 32
    assert (out / "mnist_rows_ood.png").stat().st_size > 0


def test_sequences_table_reports_mean_and_standard_error_over_seed_runs(tmp_path, capsys):
    """scripts/sequences_table.py: per method and column, the mean over seed runs and s/√n (numpy reference);
    the longest horizon of the multi-step forecast is the one reported; one seed gives no error (null in the JSON);
    a directory without a summary fails naming it."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 5))  # seeds × the five forecast metrics

    def forecast(row, shift):
        return dict(zip(table_script.FORECAST_METRICS, (row + shift).tolist()))

    dirs = []
    for seed, row in enumerate(values):
        methods = {"map": {"one_step": forecast(row, 0.0), "multi_step": {"h2": forecast(row, 9.0), "h12": forecast(row, 1.0)},
                           "free_running": forecast(row, 2.0)}}
        if seed == 0:
            methods["sgld"] = methods["map"]
            mnist = {"mnist_rows": {"methods": {"map": {"accuracy": 0.9, "nll": 0.3, "ece": 0.02, "brier": 0.1,
                                                        "ood_auroc_entropy": 0.8}}}}
        else:
            mnist = {}
        run = tmp_path / f"seed{seed}"
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"co2": {"settings": {}, "methods": methods}, **mnist}))
        dirs.append(str(run))
    table = table_script.main(dirs)
    for offset, part in ((0.0, "1-step"), (1.0, "h12"), (2.0, "free-run")):
        for index, name in enumerate(table_script.FORECAST_METRICS):
            figure = table["co2"]["map"][f"{part} {name}"]
            column = values[:, index] + offset
            assert figure["n"] == 3
            assert figure["mean"] == pytest.approx(column.mean(), rel=1e-12)
            assert figure["stderr"] == pytest.approx(column.std(ddof=1) / np.sqrt(3), rel=1e-12)
    assert table["co2"]["sgld"]["1-step rmse"]["n"] == 1 and np.isnan(table["co2"]["sgld"]["1-step rmse"]["stderr"])
    assert table["mnist_rows"]["map"]["accuracy"]["mean"] == pytest.approx(0.9)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["co2"]["sgld"]["1-step rmse"]["stderr"] is None
    with pytest.raises(SystemExit, match="no summary.json"):
        table_script.main([str(tmp_path / "missing")])
