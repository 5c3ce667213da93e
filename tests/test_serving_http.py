"""In-process HTTP tests of the BentoML service (starlette TestClient on its ASGI app) with real tiny
LightGBM models and an in-memory feature source (tests/serving_support.py)."""

from __future__ import annotations

import copy
import json
import time

import pytest

from serving_support import TEST_KEY as KEY
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(client, home) for a service started in this process."""
    from serving_support import served_app

    home = tmp_path_factory.mktemp("serving_home")
    with served_app(home, tmp_path_factory.mktemp("prom")) as client:
        yield client, home


def example(name: str) -> dict:
    from serving.schemas import load_example

    return copy.deepcopy(load_example(name))


def post(client, path, body, headers=AUTH):
    return client.post(path, content=json.dumps(body), headers={**headers, "content-type": "application/json"})


# ----------------------------------------------------------------- happy paths


def test_forecast_demand_answers_every_day_with_ordered_quantiles(served):
    from serving.schemas import DemandResponse

    client, _ = served
    r = post(client, "/forecast_demand", example("forecast_demand"))
    assert r.status_code == 200, r.text
    body = DemandResponse.model_validate(r.json())
    assert body.model_name == "tradecast-demand" and body.model_version == "1"
    assert len(body.forecast) == 14
    assert str(body.forecast[0].date) == "2026-01-01" and str(body.forecast[-1].date) == "2026-01-14"
    assert all(0 <= d.p10 <= d.p50 <= d.p90 for d in body.forecast)
    assert r.headers["x-request-id"] == body.request_id


def test_demand_promotion_days_raise_the_forecast(served):
    client, _ = served
    body = example("forecast_demand") | {"sku_id": "S000003", "market": "US", "horizon_days": 4,
                                         "promotion_event": [None, "double_11", None, "double_11"]}
    days = post(client, "/forecast_demand", body).json()["forecast"]
    assert days[1]["p50"] > days[0]["p50"] or days[3]["p50"] > days[2]["p50"]


def test_known_and_unknown_entities_flag_defaults(served):
    client, _ = served
    known = post(client, "/forecast_demand", {"sku_id": "S000001", "market": "US", "horizon_days": 2}).json()
    unknown = post(client, "/forecast_demand", {"sku_id": "NOPE", "market": "US", "horizon_days": 2}).json()
    assert known["defaults_used"] is False
    assert unknown["defaults_used"] is True and len(unknown["forecast"]) == 2


def test_predict_delay_answer(served):
    from serving.schemas import DelayResponse

    client, _ = served
    body = example("predict_delay") | {"origin_warehouse": "CN-SZX", "destination_market": "DE", "mode": "sea",
                                       "promised_days": 5}
    r = post(client, "/predict_delay", body)
    assert r.status_code == 200, r.text
    out = DelayResponse.model_validate(r.json())
    assert out.shipment_id == "SH-EXAMPLE-0001" and out.defaults_used is False
    assert out.transit_days_p90 >= out.transit_days_p50 > 5  # sea freight promised in 5 days: late
    assert out.expected_delay_hours == pytest.approx((out.transit_days_p50 - 5) * 24)
    assert out.alert is (out.expected_delay_hours > 48)
    generated = post(client, "/predict_delay", {k: v for k, v in body.items() if k != "shipment_id"}).json()
    assert generated["shipment_id"].startswith("auto-")


def test_score_risk_answer_and_velocity_push(served):
    from serving.schemas import RiskResponse

    client, _ = served
    order = example("score_risk") | {"merchant_id": "M00001", "ip": "10.9.9.9", "ip_country": "BR"}
    first = RiskResponse.model_validate(post(client, "/score_risk", order).json())
    assert first.risk_level in {"low", "medium", "high", "critical"} and 0 <= first.p_fraud <= 1
    for i in range(25):  # a burst from one IP: pushed orders feed the velocity feature
        post(client, "/score_risk", order | {"order_id": f"burst-{i}"})
    later = RiskResponse.model_validate(post(client, "/score_risk", order | {"order_id": "burst-last"}).json())
    assert later.p_fraud > first.p_fraud
    assert any("IP" in reason for reason in later.reasons)


def test_batches_answer_in_order_with_item_errors(served):
    client, _ = served
    good = example("predict_delay")
    items = [good | {"shipment_id": "a"}, good | {"weight_kg": -1, "shipment_id": "b"}, good | {"shipment_id": "c"},
             "not an object", good | {"mode": "teleport"}]
    r = post(client, "/predict_delay_batch", items)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [o.get("shipment_id") for o in out] == ["a", None, "c", None, None]
    assert out[1]["index"] == 1 and out[1]["field"] == "weight_kg" and "greater than or equal to 0.001" in out[1]["error"]
    assert out[3]["field"] == "body" and out[4]["field"] == "mode"
    demand = post(client, "/forecast_demand_batch", [example("forecast_demand"), {"sku_id": "x"}]).json()
    assert len(demand[0]["forecast"]) == 14 and demand[1]["field"] in {"market", "horizon_days"}
    risk = post(client, "/score_risk_batch", [example("score_risk")] * 3).json()
    assert [r["order_id"] for r in risk] == ["O-EXAMPLE-0001"] * 3
    assert post(client, "/score_risk_batch", []).json() == []


# ----------------------------------------------------------------- bad input -> 4xx naming the field


@pytest.mark.parametrize("path,change,field", [
    ("/forecast_demand", {"horizon_days": 91}, "horizon_days"),
    ("/forecast_demand", {"horizon_days": 0}, "horizon_days"),
    ("/forecast_demand", {"market": "XX"}, "market"),
    ("/forecast_demand", {"horizon_days": "soon"}, "horizon_days"),
    ("/forecast_demand", {"price": [1.0, 2.0]}, "price"),
    ("/forecast_demand", {"colour": "red"}, "colour"),
    ("/forecast_demand", {"sku_id": None}, "sku_id"),
    ("/predict_delay", {"weight_kg": -3}, "weight_kg"),
    ("/predict_delay", {"mode": "teleport"}, "mode"),
    ("/predict_delay", {"destination_market": "ZZ"}, "destination_market"),
    ("/predict_delay", {"created_at": "yesterday"}, "created_at"),
    ("/predict_delay", {"promised_days": float("nan")}, "promised_days"),
    ("/score_risk", {"amount": -1}, "amount"),
    ("/score_risk", {"market": "Mars"}, "market"),
    ("/score_risk", {"quantity": 1.5}, "quantity"),
])
def test_bad_fields_get_400_naming_the_field(served, path, change, field):
    client, _ = served
    name = {"/forecast_demand": "forecast_demand", "/predict_delay": "predict_delay", "/score_risk": "score_risk"}[path]
    body = example(name) | change
    if change.get("sku_id", "") is None:
        body.pop("sku_id")
    r = client.post(path, content=json.dumps(body, allow_nan=True), headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and field in r.json()["error"]


def test_missing_field_and_malformed_json(served):
    client, _ = served
    body = example("predict_delay")
    body.pop("carrier")
    r = post(client, "/predict_delay", body)
    assert r.status_code == 400 and r.json()["field"] == "carrier" and "required" in r.json()["error"]
    r = client.post("/score_risk", content=b'{"order_id": ', headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = client.post("/score_risk", content=b"[1, 2]", headers=AUTH)
    assert r.status_code == 400 and r.json()["field"] == "body"
    r = client.post("/score_risk_batch", content=b'{"a": 1}', headers=AUTH)
    assert r.status_code == 400 and "list" in r.json()["error"]


def test_oversized_batch_and_body(served):
    client, _ = served
    r = post(client, "/score_risk_batch", [example("score_risk")] * 51)
    assert r.status_code == 413 and r.json()["field"] == "items" and "at most 50" in r.json()["error"]
    r = client.post("/score_risk", content=b"x" * 3_000_000, headers=AUTH)  # serving.max_body_bytes = 2 MB here
    assert r.status_code == 413 and r.json()["field"] == "body" and "at most 2000000" in r.json()["error"]


def test_auth_required_on_predictions_not_on_health(served):
    client, _ = served
    assert post(client, "/score_risk", example("score_risk"), headers={}).status_code == 401
    bad = post(client, "/score_risk", example("score_risk"), headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401 and bad.json()["field"] == "Authorization"
    assert client.post("/admin/reload", headers={}).status_code == 401
    reload = client.post("/admin/reload", headers=AUTH)
    assert reload.status_code == 200 and reload.json()["models"]["risk"] == {"name": "tradecast-risk", "version": "1"}
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics")  # Prometheus text; its content is checked against the real server
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    spec = client.get("/docs.json").json()
    assert {"/forecast_demand", "/predict_delay_batch", "/score_risk"} <= set(spec["paths"])


# ----------------------------------------------------------------- prediction log


def test_prediction_log_holds_what_was_served(served):
    from serving.prediction_log import read_prediction_log

    client, home = served
    body = example("predict_delay") | {"shipment_id": "LOGGED-1"}
    answer = post(client, "/predict_delay", body).json()
    demand = post(client, "/forecast_demand", {"sku_id": "S000002", "market": "DE", "horizon_days": 3}).json()
    deadline = time.time() + 10
    while time.time() < deadline:
        log = read_prediction_log("delay", root=home / "predictions")
        if (log["shipment_id"] == "LOGGED-1").any():
            break
        time.sleep(0.1)
    row = log[log["shipment_id"] == "LOGGED-1"].iloc[0]
    assert row["request_id"] == answer["request_id"] and row["prediction_id"] == f"{answer['request_id']}:0"
    assert row["model_version"] == "1" and row["out_p_late"] == pytest.approx(answer["p_late"])
    assert row["in_weight_kg"] == 0.8 and row["f_lane_transit_median"] > 0
    assert str(row["event_time"]) == "2025-12-31 10:00:00"
    time.sleep(0.5)
    dlog = read_prediction_log("demand", root=home / "predictions")
    mine = dlog[dlog["request_id"] == demand["request_id"]].sort_values("date")
    assert len(mine) == 3 and list(mine["out_p50"]) == pytest.approx([d["p50"] for d in demand["forecast"]])
    assert list(mine["in_horizon"]) == [1, 2, 3]
    raw = json.loads((next((home / "predictions" / "delay").glob("*.jsonl"))).read_text().splitlines()[0])
    assert set(raw) == {"prediction_id", "request_id", "logged_at", "family", "endpoint", "model_name",
                        "model_version", "event_time", "entity", "inputs", "features", "outputs", "defaults_used"}
