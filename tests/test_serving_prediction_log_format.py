"""The prediction log writer against a frozen copy of the pandas-based writer it replaced (to_json per frame,
json.loads, json.dumps): the same bytes for every family and for NaN, None, timestamps, strings, reason lists,
bools and defaults flags, and the same frame when monitoring.predlog reads either back."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest

# ------------------------------------------------------------------ the old writer (frozen: the format oracle)


def _legacy_frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    if frame.shape[1] == 0:
        return [{} for _ in range(len(frame))]
    return json.loads(frame.to_json(orient="records", date_format="iso", date_unit="s"))


def _legacy_joined(tables: list[Any]) -> pd.DataFrame:
    if isinstance(tables[0], pd.DataFrame):
        return tables[0] if len(tables) == 1 else pd.concat(tables, ignore_index=True)
    return pd.DataFrame({c: np.concatenate([t[c] for t in tables]) for c in tables[0]})


def _legacy_columns_of(table: Any) -> tuple:
    return tuple(table.columns) if isinstance(table, pd.DataFrame) else tuple(table)


def _legacy_signature(batch) -> tuple:
    return (batch.family, type(batch.inputs) is dict, _legacy_columns_of(batch.inputs),
            _legacy_columns_of(batch.features), _legacy_columns_of(batch.outputs))


def _legacy_group(group: list) -> list[dict[str, Any]]:
    from features.on_demand import n_rows
    from serving.prediction_log import ENTITY_COLUMNS, EVENT_TIME_COLUMN

    inputs, features, outputs = (_legacy_frame_records(_legacy_joined([getattr(b, k) for b in group]))
                                 for k in ("inputs", "features", "outputs"))
    family = group[0].family
    records, j = [], 0
    for batch in group:
        logged_at = batch.logged_at.astimezone(timezone.utc).isoformat()
        horizons = batch.inputs["horizon"].to_numpy() if family == "demand" else None
        for k in range(n_rows(batch.inputs)):
            row = inputs[j]
            item = int(batch.item_index[k])
            rid = batch.request_id if batch.row_request_ids is None else str(batch.row_request_ids[k])
            pid = f"{rid}:{item}" if horizons is None else f"{rid}:{item}:{int(horizons[k])}"
            records.append({
                "prediction_id": pid, "request_id": rid, "logged_at": logged_at, "family": family,
                "endpoint": batch.endpoint, "model_name": batch.model_name, "model_version": batch.model_version,
                "event_time": row.get(EVENT_TIME_COLUMN[family]),
                "entity": {c: row.get(c) for c in ENTITY_COLUMNS[family]},
                "inputs": row, "features": features[j], "outputs": outputs[j],
                "defaults_used": bool(batch.defaults_used[k]),
            })
            j += 1
    return records


def legacy_records(batches: list) -> list[dict[str, Any]]:
    """The records the pandas-based writer produced for these batches (same grouping of same-shaped runs)."""
    records: list[dict[str, Any]] = []
    start = 0
    while start < len(batches):
        end = start + 1
        while end < len(batches) and _legacy_signature(batches[end]) == _legacy_signature(batches[start]):
            end += 1
        records += _legacy_group(batches[start:end])
        start = end
    return records


def legacy_lines(batches: list) -> list[str]:
    """The JSON lines the pandas-based writer appended for these batches."""
    return [json.dumps(r, separators=(",", ":")) for r in legacy_records(batches)]


# ------------------------------------------------------------------ batches of every family and awkward values

NOW = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=timezone.utc)


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def risk_column_batch(request_id: str, n: int, seed: int, coalesced: bool = False):
    """A risk batch as the column request path builds it (column -> array dicts), with awkward values."""
    from serving.predict import LoggedBatch

    rng = np.random.default_rng(seed)
    ordered = np.array(["2026-03-02T09:30:00.750", "2026-02-28T23:59:59"] * n, dtype="datetime64[ns]")[:n]
    created = np.array(["2025-06-01T00:00:00", "NaT", "2024-01-01T12:00:00.5"] * n, dtype="datetime64[ns]")[:n]
    inputs = {
        "order_id": _objects([f"{request_id}-O{i}" for i in range(n)]), "ordered_at": ordered,
        "buyer_id": _objects([f"B{i}" for i in range(n)]), "account_created_at": created,
        "merchant_id": _objects(["M00001"] * n), "sku_id": _objects([None if i % 2 else f"S{i}" for i in range(n)]),
        "category": _objects([None, "electronics", "beauty"] * n)[:n], "market": _objects(["US", "DE"] * n)[:n],
        "amount": rng.uniform(0, 900, n) * np.array([1.0, 1e-12, 1e9, 1 / 3][: min(n, 4)] * n)[:n],
        "quantity": np.arange(1, n + 1, dtype=np.int64),
        "payment_method": _objects(["card", None] * n)[:n], "ip": _objects([None, "10.0.0.1"] * n)[:n],
        "device_id": _objects(["DEV-\u00e9\u2028\"q\"", None] * n)[:n],
        "ip_country": _objects(["US"] * n), "card_country": _objects(["US"] * n),
        "shipping_country": _objects(["DE"] * n),
        "declared_value": np.where(np.arange(n) % 3 == 0, np.nan, rng.uniform(0, 500, n)),
        "hs_code": _objects(["8507.60", None] * n)[:n], "item_description": _objects(["li-ion \u2603 pack"] * n),
    }
    features = {
        "order_category": inputs["category"].copy(), "category": _objects(["unknown", "electronics"] * n)[:n],
        "account_age_days": ((ordered - created) / np.timedelta64(1, "D")).astype(float), "event_timestamp": ordered,
        "merchant_orders_28d": rng.integers(0, 1000, n).astype(float),
        "merchant_chargeback_rate_91d": rng.random(n), "buyer_amount_mean": np.full(n, np.inf),
        "ip_orders_1h": np.where(np.arange(n) % 2 == 0, np.nan, 2.0), "merchant_credit_grade": _objects(["A", None] * n)[:n],
        "new_account": rng.random(n) < 0.5,
    }
    outputs = {
        "p_fraud": rng.random(n), "p_compliance": np.clip(rng.random(n) - 0.5, 0.0, 1.0),
        "risk_level": np.array(["low", "critical"] * n)[:n],
        "reasons": _objects([["ip_velocity", "new_account"] if i % 2 else [] for i in range(n)]),
    }
    batch = LoggedBatch(family="risk", endpoint="score_risk", request_id=request_id, model_name="tradecast-risk",
                        model_version="7", logged_at=NOW, item_index=np.arange(n), inputs=inputs, features=features,
                        outputs=outputs, defaults_used=np.array([i % 3 == 0 for i in range(n)]))
    if coalesced:  # as ServingRuntime._call marks single requests answered together
        batch.row_request_ids = _objects([f"{request_id}-r{i}" for i in range(n)])
        batch.item_index = np.zeros(n, dtype=np.int64)
    return batch


def risk_frame_batch(request_id: str, n: int, seed: int):
    """The same risk batch as the DataFrame path holds it (risk_rows frames, outputs frame)."""
    batch = risk_column_batch(request_id, n, seed)
    batch.inputs, batch.features = pd.DataFrame(batch.inputs), pd.DataFrame(batch.features)
    batch.outputs = pd.DataFrame(batch.outputs)
    return batch


def delay_batch(request_id: str, n: int, seed: int, logged_at: datetime = NOW):
    from serving.predict import LoggedBatch

    rng = np.random.default_rng(seed)
    inputs = pd.DataFrame({"shipment_id": [f"{request_id}-S{i}" for i in range(n)],
                           "created_at": pd.Timestamp("2026-03-01 10:00:00.9") + pd.to_timedelta(np.arange(n), "h"),
                           "mode": ["sea", None][:1] * n, "promised_days": rng.integers(3, 40, n),
                           "weight_kg": np.where(np.arange(n) % 2 == 0, np.nan, rng.uniform(0.1, 50, n)),
                           "lane": [f"CN-SZX>DE" for _ in range(n)]})
    features = pd.DataFrame({"lane_late_rate_28d": rng.random(n), "missing": [np.nan] * n,
                             "event_timestamp": inputs["created_at"], "category": [None, "toys"][:1] * n})
    outputs = pd.DataFrame({"transit_days_p50": rng.uniform(1, 40, n), "p_late": rng.random(n),
                            "expected_delay_hours": np.zeros(n), "alert": rng.random(n) < 0.5})
    return LoggedBatch(family="delay", endpoint="predict_delay", request_id=request_id, model_name="tradecast-delay",
                       model_version="3", logged_at=logged_at, item_index=np.arange(n), inputs=inputs,
                       features=features, outputs=outputs, defaults_used=rng.random(n) < 0.5)


def demand_batch(request_id: str, items: int, horizon: int, seed: int):
    from serving.predict import LoggedBatch

    rng = np.random.default_rng(seed)
    n = items * horizon
    item = np.repeat(np.arange(items), horizon)
    inputs = pd.DataFrame({"sku_id": [f"S{i:06d}" for i in item], "market": "US",
                           "date": (np.datetime64("2026-03-03") + np.tile(np.arange(horizon), items)).astype("datetime64[ns]"),
                           "horizon": np.tile(np.arange(1, horizon + 1), items), "horizon_days": horizon,
                           "price": np.where(np.arange(n) % 4 == 0, np.nan, 9.99), "discount": 0.1,
                           "promotion_event": [None if i % 2 else "11.11" for i in range(n)],
                           "live_sessions": np.nan})
    features = pd.DataFrame({"units_mean_28d": rng.gamma(2, 5, n), "sku_tier": ["A"] * n, "target_dow": 1.0})
    q = np.sort(rng.gamma(2, 5, (n, 3)), axis=1)
    outputs = pd.DataFrame({"p10": q[:, 0], "p50": q[:, 1], "p90": q[:, 2]})
    return LoggedBatch(family="demand", endpoint="forecast_demand", request_id=request_id,
                       model_name="tradecast-demand", model_version="12", logged_at=NOW, item_index=item,
                       inputs=inputs, features=features, outputs=outputs, defaults_used=rng.random(n) < 0.3)


def _mixed_batches() -> list:
    """Runs of same-shaped batches broken by other shapes and families (what one flush can hold)."""
    odd = delay_batch("odd", 2, 9)
    odd.outputs = odd.outputs.assign(extra=[1, 2])
    ints = delay_batch("ints", 3, 10)
    ints.inputs = ints.inputs.assign(weight_kg=[1, 2, 3])  # int64 here, float64 in its neighbours: pd.concat upcasts
    return [risk_column_batch("r1", 1, 1), risk_column_batch("r2", 12, 2, coalesced=True), risk_column_batch("r3", 3, 3),
            risk_frame_batch("rf1", 4, 4), risk_frame_batch("rf2", 1, 5), delay_batch("d1", 3, 6), ints,
            delay_batch("d2", 2, 7), odd, demand_batch("m1", 2, 7, 8), demand_batch("m2", 1, 3, 11),
            risk_column_batch("r4", 16, 12, coalesced=True)]


# ------------------------------------------------------------------ tests


def test_records_and_lines_are_those_of_the_pandas_writer():
    from serving.prediction_log import batches_records, record_lines

    batches = _mixed_batches()
    assert batches_records(batches) == legacy_records(batches)
    assert record_lines(batches) == legacy_lines(batches)


@pytest.mark.parametrize("make", [lambda: [risk_column_batch("a", 1, 1), risk_column_batch("b", 16, 2, True)],
                                  lambda: [risk_frame_batch("a", 5, 3)],
                                  lambda: [delay_batch("a", 4, 4), delay_batch("b", 1, 5)],
                                  lambda: [demand_batch("a", 3, 14, 6)]], ids=["risk", "risk-frames", "delay", "demand"])
def test_monitoring_reads_the_same_frame_as_from_the_pandas_writer(make, tmp_home):
    from monitoring.predlog import family_log_dir, read_prediction_log
    from serving.prediction_log import PredictionLogger

    batches = make()
    family = batches[0].family
    log = PredictionLogger(fsync=False).start()
    for batch in batches:
        log.append(batch)
    log.close()  # a clean stop writes everything still queued
    path = family_log_dir(family) / f"{NOW.date().isoformat()}.jsonl"
    new_text = path.read_text(encoding="utf-8")
    new = read_prediction_log(family).frame
    path.write_text("\n".join(legacy_lines(batches)) + "\n", encoding="utf-8")
    old = read_prediction_log(family).frame
    assert new_text == path.read_text(encoding="utf-8")
    assert len(new) == sum(len(b.defaults_used) for b in batches)
    pd.testing.assert_frame_equal(new, old)
    assert new["defaults_used"].tolist() == [bool(v) for b in batches for v in b.defaults_used]


def test_float_columns_are_written_as_decoding_and_reencoding_would():
    """Floats of every magnitude (repr's e-notation below 1e-4 and from 1e16, more than 15 digits, NaN, inf,
    -0.0, rounding to 10 decimals): the column text is what json.dumps(json.loads(pandas' text)) writes."""
    from pandas._libs.json import ujson_dumps

    from serving.prediction_log import _PANDAS_JSON_ARGS, _column_fragments

    rng = np.random.default_rng(0)
    x = rng.choice([-1.0, 1.0], 50_000) * 10.0 ** rng.uniform(-18, 18, 50_000)
    x[:2000] = np.round(x[:2000], 2)
    x[2000:2012] = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e16, 1e16 - 2, 0.0001, 0.00009999999999, 1e-11,
                    123456789.123456789, 0.99999999999]
    for values in (x, x.astype(np.float32)):
        expected = [json.dumps(v) for v in json.loads(ujson_dumps(values, **_PANDAS_JSON_ARGS))]
        assert _column_fragments(values) == expected


def test_pandas_extension_dtypes_take_the_whole_frame_path():
    """Columns the column path does not encode itself (nullable ints, tz-aware times, categories, second
    resolution times, timedeltas) are written exactly as before."""
    from serving.prediction_log import batches_records, record_lines

    batch = delay_batch("ext", 3, 13)
    batch.inputs = batch.inputs.assign(
        nullable=pd.array([1, None, 3], dtype="Int64"), aware=pd.Timestamp("2026-03-01 10:00", tz="UTC"),
        cat=pd.Categorical(["a", None, "b"]), secs=np.array(["2026-03-01T10:00:00"] * 3, dtype="datetime64[s]"),
        gap=pd.to_timedelta([1, 2, 3], unit="s"))
    batches = [batch, delay_batch("plain", 2, 14)]
    assert batches_records(batches) == legacy_records(batches)
    assert record_lines(batches) == legacy_lines(batches)
