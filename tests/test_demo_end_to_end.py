"""`tradecast demo --scale tiny` end to end: models registered with champions, the service answered over HTTP
(and refused bad requests), the monitor flagged the fraud ring on the risk family, the retrained version went
through the gate and the running service answered with it, and the service was stopped."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_on_tiny(tmp_home, monkeypatch):
    from monitoring.predlog import read_prediction_log
    from tradecast import demo
    from training import registry

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    result = demo.run_demo(scale="tiny", seed=42, fresh=True)

    # models registered with champions (the first versions, trained on the data known at the deploy day)
    assert set(result.initial_versions) == set(demo.FAMILIES)
    for family in demo.FAMILIES:
        assert registry.champion_version(family) is not None
        numbers = result.backtests[family]
        metric = demo.PRIMARY[family][0]
        assert sum(metric in v for k, v in numbers.items() if k != "_selected") >= 2  # model and baseline(s)

    # the service answered every endpoint, single and batch, and refused bad requests with 4xx naming the field
    traffic = result.traffic
    assert traffic is not None and traffic.statuses.get(200, 0) > 10
    for endpoint in ("forecast_demand", "predict_delay", "score_risk"):
        assert traffic.requests.get(endpoint, 0) >= 1 and traffic.requests.get(f"{endpoint}_batch", 0) >= 1
    for family in demo.FAMILIES:
        assert traffic.items.get(family, 0) > 50
        assert len(read_prediction_log(family, time_column="event_time").frame) >= traffic.items[family]
    statuses = {b.what: b.status for b in result.bad_requests}
    assert statuses["no API key"] == 401 and statuses["wrong API key"] == 401
    assert statuses["negative weight"] == 400 and statuses["horizon out of range"] == 400
    assert statuses["oversized batch (501 items)"] == 413
    bad_item = next(b for b in result.bad_requests if b.what == "one bad item in a batch")
    assert bad_item.status == 200 and "mode" in bad_item.message
    assert "weight_kg" in next(b.message for b in result.bad_requests if b.what == "negative weight")

    # the risk monitor (replayed on its schedule after the event) flagged the scenario, with a report on disk
    assert demo.SCENARIO == "fraud_ring" and demo.SCENARIO_FAMILY == "risk"
    alert = result.first_alert
    assert alert is not None, result.schedule
    assert alert["severity"] in ("orange", "red"), alert
    assert any("drifted" in r or "recall" in r for r in alert["reasons"])
    assert set(result.monitor) == set(demo.FAMILIES)  # today's run of every family
    for view in result.monitor.values():
        assert view["html"].endswith(".html")
    from pathlib import Path

    assert Path(alert["html"]).stat().st_size > 10_000

    # the retrained risk model went through the gate, and the service answered with the new version
    step = next(s for s in result.retrain if s.family == "risk")
    assert step.action == "retrained", step.line()
    assert step.promoted, step.line()
    assert registry.champion_version("risk") == step.version != result.initial_versions["risk"]
    assert result.served_after["risk"] == step.version

    # the service was stopped
    assert result.service_exit is not None
    text = demo.summary_text(result)
    assert "mlflow ui --backend-store-uri" in text and "curl" in text and alert["html"] in text
