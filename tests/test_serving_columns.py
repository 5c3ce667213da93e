"""The risk request path without DataFrames (serving.predict._score_risk_columns) against the DataFrame path it
replaces: on a trained risk champion and the real Feast store, the looked-up features, the model's outputs and
the logged records must be the same."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training_fixtures import feature_home, train_home  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


class FrameOnly:
    """A model bundle hiding predict_columns, so serving takes the DataFrame path."""

    def __init__(self, bundle):
        self.bundle = bundle
        self.family, self.name, self.version = bundle.family, bundle.name, bundle.version

    def predict(self, frame):
        return self.bundle.predict(frame)


def _requests(orders: pd.DataFrame, n: int):
    """Varied orders: known and unknown buyers, missing device / IP / countries / account date, odd categories."""
    from serving.schemas import RiskRequest

    rng = np.random.default_rng(3)
    rows = orders.sample(n, random_state=3).reset_index(drop=True)
    rows = rows.astype(object).where(rows.notna(), None)
    out = []
    for i, o in rows.iterrows():
        out.append(RiskRequest(
            order_id=f"COL-{i}", ordered_at=(pd.Timestamp("2025-12-31T08:00:00") + pd.Timedelta(minutes=i)).isoformat(),
            buyer_id=o["buyer_id"] if i % 5 else f"NEW-BUYER-{i}", merchant_id=o["merchant_id"], market=o["market"],
            category=o["category"] if i % 7 else None, quantity=int(1 + i % 3),
            amount=float(rng.uniform(2, 900)), payment_method=o["payment_method"],
            ip=None if i % 6 == 0 else f"198.51.100.{i % 4}", device_id=None if i % 4 == 0 else f"DEV-{i % 3}",
            ip_country=None if i % 8 == 0 else o["ip_country"], card_country=o["card_country"],
            shipping_country=o["shipping_country"], declared_value=float(rng.uniform(1, 500)),
            hs_code=o["hs_code"], item_description="lithium battery pack" if i % 9 == 0 else o["item_description"],
            account_created_at=None if i % 10 == 0 else "2025-06-01T00:00:00"))
    return out


def _same_values(a, b, what: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=0, atol=1e-12, equal_nan=True, err_msg=what)
    else:
        assert a.tolist() == b.tolist(), what


def test_columns_path_equals_frame_path(train_home, tiny_tables, monkeypatch):
    from features.store import get_store, materialize
    from serving import predict as P
    from serving.loading import FeastFeatureSource, MlflowChampions, load_champion_bundle
    from serving.prediction_log import batch_records
    from training.pipeline import train_family

    monkeypatch.setenv("TRADECAST_RISK__LIGHTGBM__MIN_CHILD_SAMPLES", "3")
    assert train_family("risk").gate_promoted
    materialize(get_store(), end="2026-01-01")
    bundle = load_champion_bundle(MlflowChampions(), "risk")
    assert bundle.supports_columns
    source = FeastFeatureSource(wal=True)
    items = _requests(tiny_tables["orders"], 40)

    for batch in (items[:1], items):
        frame_rows, column_rows = P.risk_rows(batch), P.risk_columns(batch)
        vectors = source.lookup("risk", frame_rows)
        columns, defaults = source.lookup_columns("risk", column_rows)
        assert set(columns) == set(vectors.frame.columns)
        assert defaults.tolist() == vectors.defaults_used.tolist()
        for c in vectors.frame.columns:
            _same_values(vectors.frame[c].to_numpy(), columns[c], c)
        _, frame_out = P.score(bundle, source, "risk", frame_rows)
        column_out = bundle.predict_columns({**column_rows, **columns})
        for c in ("p_fraud", "p_compliance", "risk_level", "reasons"):
            _same_values(frame_out[c].tolist() if c == "reasons" else frame_out[c].to_numpy(),
                         column_out[c] if c != "reasons" else column_out[c], c)
    assert any(r for r in column_out["reasons"])  # reasons were compared, not just empty lists

    # the whole endpoint function: the columns path pushes, then the frame path (after the same push) must
    # answer and log the same
    fast = P.score_risk(items, bundle, source, "req-columns")
    slow_vectors, slow_raw = P.score(FrameOnly(bundle), source, "risk", P.risk_rows(items))
    slow = P.score_risk(items, FrameOnly(bundle), _NoPush(source), "req-frames")
    for a, b in zip(fast.responses, slow.responses):
        assert {**a, "request_id": ""} == {**b, "request_id": ""}
    fast_records, slow_records = batch_records(fast.logged), batch_records(slow.logged)
    assert len(fast_records) == len(slow_records) == len(items)
    for a, b in zip(fast_records, slow_records):
        for key in ("event_time", "entity", "inputs", "defaults_used", "model_version"):
            assert a[key] == b[key], key
        assert a["features"].keys() == b["features"].keys()
        for name, value in a["features"].items():
            other = b["features"][name]
            assert value == other or (isinstance(value, float) and abs(value - other) < 1e-9), name
        assert a["outputs"] == b["outputs"]
    assert slow_raw["p_fraud"].tolist() == [r["p_fraud"] for r in fast.responses]


class _NoPush:
    """The feature source without its velocity push (the columns path already pushed these orders)."""

    def __init__(self, source):
        self.source = source

    def lookup(self, family, rows):
        return self.source.lookup(family, rows)

    def push_orders(self, orders) -> None:
        return None
