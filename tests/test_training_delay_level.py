"""Corridor statistics of the delay_lane view are point-in-time correct, and the transit model follows the level."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.compute import compute_delay_lane, load_features_config
from features.generate import generate_tables, load_data_config

CORRIDOR = ["corridor_delay_ratio_7d", "corridor_delay_ratio_28d", "corridor_delivered_7d", "corridor_delivered_28d",
            "corridor_overdue_share"]


@pytest.fixture(scope="module")
def shipments() -> pd.DataFrame:
    return generate_tables(load_data_config(None), scale="tiny", seed=3)["shipments"]


def known_at(shipments: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Shipments created before `as_of`, outcomes hidden until delivered (what a system held then)."""
    s = shipments[pd.to_datetime(shipments["created_at"]) < as_of].copy()
    hidden = ~(pd.to_datetime(s["delivered_at"]) <= as_of)
    for col in ("clearance_hours", "transit_days", "delivered_at", "late"):
        s[col] = s[col].mask(hidden)
    return s.reset_index(drop=True)


def test_corridor_features_only_use_what_was_known(shipments):
    cfg = load_features_config()
    full = compute_delay_lane(shipments, cfg)
    as_of = pd.to_datetime(shipments["created_at"]).quantile(0.6).normalize()
    past = compute_delay_lane(known_at(shipments, as_of), cfg)
    stamp = pd.Timestamp(as_of, tz="UTC")
    key = ["lane_mode", "event_timestamp"]
    a = full[full["event_timestamp"] <= stamp].set_index(key)[CORRIDOR]
    b = past[past["event_timestamp"] <= stamp].set_index(key)[CORRIDOR]
    a = a.loc[b.index]
    assert len(b) > 100
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)
    assert full["corridor_delivered_28d"].max() > 0
    assert ((full["corridor_overdue_share"].dropna() >= 0) & (full["corridor_overdue_share"].dropna() <= 1)).all()


def test_overdue_share_sees_a_slowdown_before_deliveries_do(shipments):
    """Shipments held in transit past their promise raise the corridor's overdue share while none is delivered."""
    cfg = load_features_config()
    s = shipments.copy()
    created = pd.to_datetime(s["created_at"])
    t_mid = created.quantile(0.5)
    slow = (created >= t_mid) & (s["mode"] != "express")
    s.loc[slow, "transit_days"] = s.loc[slow, "transit_days"] + 30
    s.loc[slow, "delivered_at"] = pd.to_datetime(s.loc[slow, "delivered_at"]) + pd.Timedelta(days=30)
    base, slowed = compute_delay_lane(shipments, cfg), compute_delay_lane(s, cfg)
    lo, hi = pd.Timestamp(t_mid + pd.Timedelta(days=25), tz="UTC"), pd.Timestamp(t_mid + pd.Timedelta(days=45), tz="UTC")

    def share(frame: pd.DataFrame) -> float:
        rows = frame[(frame["event_timestamp"] > lo) & (frame["event_timestamp"] <= hi)]
        return float(rows["corridor_overdue_share"].mean())
    assert share(slowed) > share(base) + 0.05


def test_transit_model_follows_the_corridor_level():
    from training.delay import LaneRelativeRegressor
    from training.estimators import LGBMQuantileRegressor

    rng = np.random.default_rng(0)
    n = 3000
    promised = rng.choice([5.0, 12.0, 40.0], n)
    ratio = rng.uniform(0.8, 1.1, n)
    X = pd.DataFrame({"promised_days": promised, "corridor_delay_ratio_28d": ratio,
                      "corridor_delivered_28d": np.full(n, 50.0), "weight_kg": rng.lognormal(1, 0.5, n)})
    y = promised * ratio * np.exp(rng.normal(0, 0.1, n))
    inner = LGBMQuantileRegressor(numeric=list(X.columns), quantiles=(0.5, 0.9), log_target=True,
                                  params={"n_estimators": 50, "verbose": -1, "num_threads": 1})
    model = LaneRelativeRegressor(inner).fit(X, y)
    # a corridor 30% slower than anything seen in training: the answer follows it (a plain tree model cannot)
    slower = X.head(200).assign(corridor_delay_ratio_28d=1.43)
    p = model.predict_quantiles(slower)
    expected = slower["promised_days"] * 1.43
    assert np.median(np.abs(p[:, 0] / expected - 1)) < 0.1
    assert (p[:, 1] >= p[:, 0] - 1e-9).all()
    # too few recent corridor deliveries: the promise alone is the level
    sparse = X.head(5).assign(corridor_delivered_28d=2.0, corridor_delay_ratio_28d=3.0)
    np.testing.assert_allclose(model.reference_level(sparse), sparse["promised_days"])
