"""Drift is a pure function of (reference, current): found when injected, not found on the same distribution."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.config import ColumnTest, load_monitoring_config
from monitoring.drift import compute_drift, effective_threshold, feature_candidates, reference_blocks


def frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "f_weight_kg": rng.lognormal(1.0, 0.5, n),
        "f_lane_delay_7d": rng.gamma(2.0, 1.0, n) + 6.0 * shift,
        "f_mode": rng.choice(["air", "sea", "rail", "express"], n,
                             p=[0.4, 0.3, 0.2, 0.1] if not shift else [0.1, 0.3, 0.2, 0.4]),
        "f_fast_lane": rng.random(n) < 0.3,
        "in_market": rng.choice(["DE", "FR", "MY", "US", "BR"], n),
        "in_shipment_id": [f"S{seed}-{i}" for i in range(n)],
        "in_created_at": pd.date_range("2026-01-01", periods=n, freq="h").astype(str),
        "out_transit_days_p50": rng.normal(12.0 + 8.0 * shift, 3.0, n),
        "out_p_late": rng.beta(2, 6, n),
    })


@pytest.fixture(scope="module")
def settings():
    return load_monitoring_config().family("delay")


@pytest.mark.parametrize("n_current", [200, 1500])
def test_same_distribution_has_no_drift(settings, n_current):
    result = compute_drift(frame(4000, seed=1), frame(n_current, seed=2), settings)
    assert result.n_features == 5  # ids and timestamps are not features
    assert result.n_drifted == 0, [(c.column, c.score, c.threshold) for c in result.features]
    assert not result.dataset_drift
    assert not result.prediction_drift
    assert {c.column for c in result.predictions} == {"out_transit_days_p50", "out_p_late"}


def test_injected_shift_is_found_and_ranked_first(settings):
    result = compute_drift(frame(4000, seed=1), frame(300, seed=3, shift=1.0), settings)
    drifted = [c.column for c in result.drifted_features()]
    assert set(drifted) == {"f_lane_delay_7d", "f_mode"}
    assert result.share_drifted == pytest.approx(2 / 5)
    assert result.dataset_drift  # 40% >= drift_share 30%
    assert result.prediction_drift
    assert [c.drifted for c in result.predictions] == [True, False]
    assert result.ordered_columns()[0].column == "f_lane_delay_7d"  # the most drifted first
    methods = {c.column: (c.method, c.score_kind) for c in result.features}
    assert methods["f_lane_delay_7d"] == ("wasserstein", "distance")
    assert methods["f_mode"] == ("jensenshannon", "distance")
    summary = result.to_dict()
    assert summary["drifted_features"] == drifted
    assert summary["features"][0]["drifted"] is True


def test_pure_same_input_same_result(settings):
    ref, cur = frame(1000, seed=1), frame(300, seed=3, shift=1.0)
    assert compute_drift(ref, cur, settings) == compute_drift(ref.copy(), cur.copy(), settings)


def test_per_column_p_value_test(settings):
    custom = settings.model_copy(update={"per_column": {"f_weight_kg": ColumnTest(method="ks", threshold=0.01)}})
    ref, cur = frame(2000, seed=1), frame(500, seed=4)
    cur["f_weight_kg"] *= 1.5
    result = compute_drift(ref, cur, custom)
    col = next(c for c in result.features if c.column == "f_weight_kg")
    assert (col.method, col.score_kind, col.threshold) == ("ks", "p_value", 0.01)
    assert col.drifted and col.score < 0.01


def test_identifiers_and_unshared_columns_are_not_tested():
    ref, cur = frame(100, seed=1), frame(100, seed=2)
    cur["f_only_in_current"] = 1.0
    cols = feature_candidates(ref, cur)
    assert "in_shipment_id" not in cols and "in_created_at" not in cols and "f_only_in_current" not in cols


def test_high_cardinality_strings_are_skipped(settings):
    ref, cur = frame(500, seed=1), frame(300, seed=2)
    ref["f_buyer"] = [f"b{i}" for i in range(len(ref))]
    cur["f_buyer"] = [f"c{i}" for i in range(len(cur))]
    result = compute_drift(ref, cur, settings)
    assert "f_buyer" in result.skipped and "distinct values" in result.skipped["f_buyer"]


def test_distance_threshold_has_a_noise_floor():
    assert effective_threshold("wasserstein", 0.1, 100, 3.0) == pytest.approx(0.3)
    assert effective_threshold("wasserstein", 0.1, 10_000, 3.0) == pytest.approx(0.1)
    assert effective_threshold("ks", 0.05, 100, 3.0) == 0.05


def entity_day_frame(start: str, days: int, seed: int, walk: np.ndarray | None = None, shift: float = 0.0):
    """Rows carrying a per-carrier daily statistic that wanders from week to week (a rolling late rate), like the
    lane/carrier features of the prediction log: 12 carriers, 40 rows a day, one value per carrier and day."""
    rng = np.random.default_rng(seed)
    walk = walk if walk is not None else np.cumsum(rng.normal(0, 0.02, (days, 12)), axis=0)
    day = np.repeat(np.arange(days), 40)
    carrier = rng.integers(0, 12, len(day))
    level = 0.15 + 0.01 * np.arange(12)
    return pd.DataFrame({
        "event_time": pd.Timestamp(start) + pd.to_timedelta(day, unit="D") + pd.to_timedelta(rng.integers(0, 86400, len(day)), unit="s"),
        "f_carrier_late_rate_28d": level[carrier] + walk[day, carrier] + shift,
        "f_weight_kg": rng.lognormal(1.0, 0.5, len(day)) * (1 + shift),
    }), walk


def test_reference_block_noise_floor_absorbs_week_to_week_movement(settings):
    """A carrier statistic that moves from week to week drifts under the sampling floor alone; the reference's own
    block-to-block movement absorbs it, and a real shift still stands out."""
    rng = np.random.default_rng(9)
    walk = np.cumsum(rng.normal(0, 0.008, (35, 12)), axis=0)
    both, _ = entity_day_frame("2026-03-01", 35, seed=8, walk=walk)
    ref = both[both["event_time"] < pd.Timestamp("2026-03-29")].reset_index(drop=True)
    cur = both[both["event_time"] >= pd.Timestamp("2026-03-29")].reset_index(drop=True)
    plain = compute_drift(ref, cur, settings)
    floored = compute_drift(ref, cur, settings, time_column="event_time", block=pd.Timedelta(days=7))
    assert "f_carrier_late_rate_28d" in {c.column for c in plain.drifted_features()}  # the problem
    assert floored.n_drifted == 0, [(c.column, c.score, c.threshold) for c in floored.features]
    shifted = cur.assign(f_carrier_late_rate_28d=cur["f_carrier_late_rate_28d"] + 0.05)
    found = compute_drift(ref, shifted, settings, time_column="event_time", block=pd.Timedelta(days=7))
    assert [c.column for c in found.drifted_features()] == ["f_carrier_late_rate_28d"]
    # without a time column (a training-sample reference) there is no block floor
    assert compute_drift(ref.drop(columns="event_time"), cur, settings, time_column="event_time",
                         block=pd.Timedelta(days=7)).to_dict() == plain.to_dict()


def test_reference_blocks_overlap_one_day_apart():
    """A 28-day reference holds 21 overlapping 7-day blocks a day apart, counted back from its last row (not 3-4
    disjoint ones); under two blocks, none."""
    times = pd.Series(pd.date_range("2026-03-01", periods=28 * 24, freq="h"))
    masks = reference_blocks(times, pd.Timedelta(days=7), pd.Timedelta(days=1), min_rows=30)
    assert len(masks) == 21 and all(m.sum() == 7 * 24 for m in masks)
    assert reference_blocks(times[: 13 * 24], pd.Timedelta(days=7), pd.Timedelta(days=1), min_rows=30) == []


def test_calm_weeks_of_a_wandering_statistic_rarely_drift(settings):
    """Window after window of a carrier statistic that only wanders (no shift): the sampling floor alone flags most
    of them, the reference's block floor (3 x the RMS block-vs-rest distance) none; a shift of a few weeks' worth of
    normal movement is still found."""
    days = 140
    walk = np.cumsum(np.random.default_rng(3).normal(0, 0.008, (days, 12)), axis=0)
    both, _ = entity_day_frame("2026-01-01", days, seed=4, walk=walk)
    col, plain_hits, floored_hits = "f_carrier_late_rate_28d", 0, 0
    for end in range(35, days, 7):
        e = pd.Timestamp("2026-01-01") + pd.Timedelta(days=end)
        ref = both[(both.event_time >= e - pd.Timedelta(days=35)) & (both.event_time < e - pd.Timedelta(days=7))]
        cur = both[(both.event_time >= e - pd.Timedelta(days=7)) & (both.event_time < e)].reset_index(drop=True)
        ref = ref.reset_index(drop=True)
        plain_hits += compute_drift(ref, cur, settings).features[0].drifted
        floored = compute_drift(ref, cur, settings, time_column="event_time", block=pd.Timedelta(days=7))
        floored_hits += next(c for c in floored.features if c.column == col).drifted
    assert plain_hits >= 10 and floored_hits == 0, (plain_hits, floored_hits)
    shifted = cur.assign(**{col: cur[col] + 0.06})
    found = compute_drift(ref, shifted, settings, time_column="event_time", block=pd.Timedelta(days=7))
    assert [c.column for c in found.drifted_features()] == [col]
