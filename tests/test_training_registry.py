"""MLflow registry round trip in a temporary home and the promotion gate's decisions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import registry
from training.pyfunc import TradecastModel
from tradecast.errors import TradecastError


class _Constant:
    """A tiny stand-in estimator (the registry does not care what the family model holds)."""

    def __init__(self, value: float):
        self.value = value


def _register(value: float, accuracy: float) -> str:
    import mlflow

    model = TradecastModel("demand", {"center": _Constant(value)},
                           {"input_columns": ["x"], "output_columns": ["p50"]})
    example = pd.DataFrame({"x": [1.0, 2.0]})
    out = pd.DataFrame({"p50": [value, value]})
    mlflow.set_experiment(experiment_id=registry.ensure_experiment("demand"))
    with mlflow.start_run():
        return registry.log_and_register("demand", model, example, out,
                                         {"metric.accuracy": accuracy, "backtest_window": "w1"})


def test_default_tracking_is_sqlite_under_home(tmp_home, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert registry.tracking_uri() == f"sqlite:///{tmp_home / 'mlflow' / 'mlflow.db'}"
    assert not (tmp_home / "mlflow").exists()  # nothing made before first use
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert registry.tracking_uri() == "http://mlflow.example:5000"


def test_register_promote_and_load(tmp_home, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert registry.champion_version("demand") is None
    with pytest.raises(TradecastError, match="no champion"):
        registry.load_champion("demand")
    v1 = _register(1.0, 0.70)
    assert (tmp_home / "mlflow" / "mlflow.db").exists()
    assert registry.promote("demand", v1, "first") is None
    v2 = _register(2.0, 0.75)
    registry.mark_challenger("demand", v2, "not better")
    assert registry.champion_version("demand") == v1
    assert registry.challenger_version("demand") == v2
    model, version = registry.load_champion("demand")
    assert version == v1 and model.estimators["center"].value == 1.0
    summary = registry.family_summary("demand")
    assert summary["champion"]["metrics"]["accuracy"] == pytest.approx(0.70)
    assert summary["challenger"]["version"] == v2
    # manual promotion replaces the champion and clears the challenger alias
    assert registry.promote("demand", v2, "by hand") == v1
    assert registry.champion_version("demand") == v2
    assert registry.challenger_version("demand") is None
    assert registry.version_tags("demand", v1)["replaced_by"] == v2
    # local copy loads without the registry
    path = registry.download_version("demand", v2, tmp_home / "cache")
    assert registry.load_model_from_path(path).estimators["center"].value == 2.0
    with pytest.raises(TradecastError, match="no version 99"):
        registry.promote("demand", "99", "nope")
    assert [r["version"] for r in registry.list_versions("demand")] == [v2, v1]


def test_gate_refuses_worse_and_requires_margin():
    ok = {"finite": True}
    better = registry.gate_decision("demand", {"accuracy": 0.80}, {"accuracy": 0.70}, 0.01, ok, "w")
    assert better.promote and "better" in better.reason
    worse = registry.gate_decision("demand", {"accuracy": 0.69}, {"accuracy": 0.70}, 0.01, ok, "w")
    assert not worse.promote and "champion kept" in worse.reason
    tiny = registry.gate_decision("demand", {"accuracy": 0.7035}, {"accuracy": 0.70}, 0.01, ok, "w")
    assert not tiny.promote  # +0.5% does not reach the 1% margin
    # lower is better for delay MAE
    assert registry.gate_decision("delay", {"mae": 1.0}, {"mae": 1.5}, 0.05, ok, "w").promote
    assert not registry.gate_decision("delay", {"mae": 1.6}, {"mae": 1.5}, 0.05, ok, "w").promote
    # sanity checks and missing metrics block even without a champion
    assert not registry.gate_decision("demand", {"accuracy": 0.9}, None, 0.01, {"beats_baseline": False}, "w").promote
    assert not registry.gate_decision("demand", {"accuracy": float("nan")}, None, 0.01, ok, "w").promote
    assert registry.gate_decision("demand", {"accuracy": 0.5}, None, 0.01, ok, "w").promote


def test_models_cli_list_and_promote(tmp_home, monkeypatch):
    from typer.testing import CliRunner

    from tradecast.cli import app

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    v1 = _register(1.0, 0.70)
    registry.promote("demand", v1, "first")
    v2 = _register(2.0, 0.80)
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "champion    v1" in listed.output and "accuracy=0.7000" in listed.output
    refused = runner.invoke(app, ["models", "promote", "demand", v2], input="n\n")
    assert refused.exit_code == 1 and "replaces: v1" in refused.output
    assert registry.champion_version("demand") == v1
    done = runner.invoke(app, ["models", "promote", "demand", v2, "--yes"])
    assert done.exit_code == 0 and registry.champion_version("demand") == v2
    missing = runner.invoke(app, ["models", "promote", "demand", "42", "--yes"])
    assert missing.exit_code == 2 and "no version 42" in missing.output
    bad = runner.invoke(app, ["train", "weather"])
    assert bad.exit_code == 2 and "choose one of" in bad.output
