"""Each pipeline end to end on tiny data into a temporary MLflow, the gate, failure safety and model behaviour."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training_fixtures import feature_home, train_home  # noqa: F401  (fixtures)


def _train(family: str):
    from training.pipeline import train_family

    return train_family(family)


def _example_frame(family: str, n: int = 200) -> pd.DataFrame:
    """Rows of the family's training set (the serving input columns plus labels)."""
    from training.config import load_family_config
    from training.pipeline import make_family

    fam = make_family(family, load_family_config(family))
    ts = fam.build_training_set(lambda m: None)
    return ts.frame.tail(n).reset_index(drop=True)


@pytest.mark.slow
def test_demand_pipeline_gate_and_failure_safety(train_home, monkeypatch):
    import mlflow

    from training import registry

    first = _train("demand")
    assert first.version == "1" and first.gate_promoted
    assert registry.champion_version("demand") == "1"
    assert set(first.metrics["candidate"]) == {"lightgbm", "pytorch", "seasonal_naive", "moving_average"}
    assert set(first.metrics["fold"]) == {"1", "2", "all"}
    assert {"sku_tier", "day_type", "horizon_band"} <= set(first.breakdown["split"])
    run = mlflow.get_run(first.run_id)
    assert run.data.tags["data_fingerprint"] and run.data.tags["code_version"]
    assert "lightgbm.fold1.accuracy" in run.data.metrics and "seasonal_naive.accuracy" in run.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(first.run_id, "plots")}
    assert {"plots/forecast_vs_actual.png", "plots/feature_importance.png"} <= artifacts
    info = mlflow.models.get_model_info(f"models:/tradecast-demand/{first.version}")
    assert info.signature is not None and "price" in info.signature.inputs.input_names()

    # a clearly worse recipe on the same window is refused and the champion stays
    monkeypatch.setenv("TRADECAST_DEMAND__LIGHTGBM__N_ESTIMATORS", "1")
    monkeypatch.setenv("TRADECAST_DEMAND__CHALLENGER__ENABLED", "false")
    worse = _train("demand")
    assert worse.version == "2" and not worse.gate_promoted
    assert "champion kept" in worse.gate_reason
    assert registry.champion_version("demand") == "1"
    assert registry.challenger_version("demand") == "2"
    assert registry.version_tags("demand", "2")["gate_reason"] == worse.gate_reason

    # a run that fails after the backtest leaves the registry as it was
    from training import demand

    def boom(self, ts, candidate):
        raise RuntimeError("disk full")

    monkeypatch.setattr(demand.DemandFamily, "fit_final", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _train("demand")
    assert registry.champion_version("demand") == "1"
    assert [v["version"] for v in registry.list_versions("demand")] == ["2", "1"]


@pytest.mark.slow
def test_demand_behaviour_promotion_raises_forecast_and_ids_do_not_matter(train_home, monkeypatch):
    from training import registry

    # enough trees and small leaves that the few promotion days of the tiny data are learned
    monkeypatch.setenv("TRADECAST_DEMAND__LIGHTGBM__N_ESTIMATORS", "120")
    monkeypatch.setenv("TRADECAST_DEMAND__LIGHTGBM__MIN_CHILD_SAMPLES", "5")
    monkeypatch.setenv("TRADECAST_DEMAND__CHALLENGER__ENABLED", "false")
    result = _train("demand")
    model, version = registry.load_champion("demand")
    assert version == result.version
    frame = _example_frame("demand")
    x = frame[model.input_columns]
    base = model.predict_frame(x.assign(is_promotion=0.0))
    promo = model.predict_frame(x.assign(is_promotion=1.0))
    assert (promo["p50"] >= base["p50"] - 1e-9).all()
    assert promo["p50"].mean() > base["p50"].mean()
    out = model.predict_frame(x)
    assert (out["p10"] <= out["p50"] + 1e-9).all() and (out["p50"] <= out["p90"] + 1e-9).all()
    relabelled = x.assign(sku_id="X-" + x["sku_id"].astype(str).str[::-1])
    pd.testing.assert_frame_equal(model.predict_frame(relabelled), out)


@pytest.mark.slow
def test_delay_pipeline_and_behaviour(train_home):
    from training import registry

    result = _train("delay")
    assert result.gate_promoted and set(result.metrics["candidate"]) == {"lightgbm", "lane_median"}
    model, _ = registry.load_champion("delay")
    x = _example_frame("delay")[model.input_columns]
    out = model.predict_frame(x)
    assert list(out.columns) == ["p50_days", "p90_days", "p_late", "expected_delay_hours", "alert"]
    assert (out["p90_days"] >= out["p50_days"] - 1e-9).all() and out["p_late"].between(0, 1).all()
    # a customs inspection never lowers the predicted delay
    fast = model.predict_frame(x.assign(customs_channel="fast_lane"))
    inspected = model.predict_frame(x.assign(customs_channel="inspection"))
    assert (inspected["p50_days"] >= fast["p50_days"] - 1e-9).all()
    assert (inspected["p_late"] >= fast["p_late"] - 1e-12).all()
    # neither does a longer (slower) lane: its transit level is higher, the request-time ratios follow
    from features.on_demand import ON_DEMAND_OUTPUTS

    slower = {c: x[c] * 1.5 for c in x.columns if c.startswith(("lane_transit_median_", "lane_transit_p90_"))}
    assert slower
    longer = model.predict_frame(x.assign(**slower).drop(columns=ON_DEMAND_OUTPUTS["delay_request"]))
    assert (longer["p50_days"] >= out["p50_days"] - 1e-9).all()
    assert longer["p50_days"].mean() > out["p50_days"].mean()
    # relabelling carriers, lanes and shipment ids changes nothing (they are not model inputs)
    relabelled = x.assign(carrier="c-" + x["carrier"].astype(str), lane="L-" + x["lane"].astype(str))
    pd.testing.assert_frame_equal(model.predict_frame(relabelled), out)
    with pytest.raises(Exception, match="customs_channel"):
        model.predict_frame(x.assign(customs_channel="teleport"))


@pytest.mark.slow
def test_risk_pipeline_and_behaviour(train_home, monkeypatch):
    from training import registry

    # the tiny data holds ~50 frauds: small leaves so the velocity pattern is learned
    monkeypatch.setenv("TRADECAST_RISK__LIGHTGBM__N_ESTIMATORS", "100")
    monkeypatch.setenv("TRADECAST_RISK__LIGHTGBM__MIN_CHILD_SAMPLES", "3")
    result = _train("risk")
    assert result.gate_promoted and {"lightgbm", "rules"} <= set(result.metrics["candidate"])
    assert "fraud_recall_at_fa" in result.metrics.columns
    model, _ = registry.load_champion("risk")
    frame = _example_frame("risk", 300)
    x = frame[model.input_columns]
    out = model.predict_frame(x)
    assert set(out["risk_level"]) <= {"low", "medium", "high", "critical"}
    # a burst of orders from one IP address raises fraud risk, never lowers it
    burst = model.predict_frame(x.assign(ip_orders_1h=x["ip_orders_1h"] + 12, ip_orders_24h=x["ip_orders_24h"] + 30))
    assert (burst["p_fraud"] >= out["p_fraud"] - 1e-12).all()
    # (the tiny data has too few frauds for the burst pattern to be learned; that a learned burst raises the
    # score is checked on controlled data in test_training_estimators and by the gate's behaviour check)
    assert result.gate_promoted and "behaviour" not in result.gate_reason
    top = out["p_fraud"].idxmax()
    assert out.loc[top, "reason_codes"]  # readable reasons come with the highest score
    relabelled = x.assign(order_id="o-" + x["order_id"].astype(str), buyer_id="b-" + x["buyer_id"].astype(str),
                          merchant_id="m-" + x["merchant_id"].astype(str))
    pd.testing.assert_frame_equal(model.predict_frame(relabelled), out)


def test_risk_levels_and_reason_codes_are_readable():
    from training.risk import reason_codes, risk_levels

    levels = risk_levels(np.array([0.01, 0.2, 0.5, 0.9]), np.array([0.0, 0.0, 0.0, 0.0]),
                         {"medium": 0.1, "high": 0.3, "critical": 0.6})
    assert levels.tolist() == ["low", "medium", "high", "critical"]
    contrib = pd.DataFrame({"ip_orders_1h": [2.0, -1.0], "new_account": [0.5, 0.01], "amount": [0.1, -0.2]})
    reasons = reason_codes([contrib], top=2, overrides={"amount": "odd amount"})
    assert reasons == ["many orders from this IP address in the last hour; account created in the last week", ""]
