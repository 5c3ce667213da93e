"""Bursty scores (fraud comes in episodes: a merchant's 10-30 brushing orders in one day): the unit permutation test
keeps calm windows quiet where the row-count floors alone alert, and still finds a sustained shift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from monitoring.config import FamilyMonitorConfig, load_monitoring_config
from monitoring.drift import compute_drift, effective_threshold, time_units, unit_permutation_threshold

ROWS_PER_DAY = 120


def bursty_days(rng: np.random.Generator, start: str, days: int, fraud_share: float = 0.01,
                episodes_per_day: float = 0.05) -> pd.DataFrame:
    """p_fraud-like scores: mostly near 0, a background `fraud_share` of high ones spread over every day, and
    brushing episodes (Poisson per day) of 10-30 high scores within one day."""
    parts = []
    for d in range(days):
        day = pd.Timestamp(start) + pd.Timedelta(days=d)
        n_ep = rng.poisson(episodes_per_day)
        n = ROWS_PER_DAY + int(rng.integers(10, 31, n_ep).sum())
        high = np.r_[rng.random(ROWS_PER_DAY) < fraud_share, np.ones(n - ROWS_PER_DAY, bool)]
        parts.append(pd.DataFrame({
            "event_time": day + pd.to_timedelta(rng.integers(0, 86400, n), unit="s"),
            "out_p_fraud": np.where(high, rng.beta(8, 2, n), rng.beta(1, 40, n)),
        }))
    return pd.concat(parts, ignore_index=True)


def normed_wasserstein(ref: pd.Series, cur: pd.Series) -> float:
    """Evidently's `wasserstein` score (distance over the reference's std)."""
    return stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001)


def window_verdicts(ref: pd.DataFrame, cur: pd.DataFrame, alpha: float, draws: int) -> tuple[bool, bool]:
    """(drift under the row-count floor alone, drift with the unit permutation test as well)."""
    score = normed_wasserstein(ref.out_p_fraud, cur.out_p_fraud)
    plain = score >= effective_threshold("wasserstein", 0.1, len(cur), 3.0)
    unit = pd.Timedelta(days=1)
    floor = unit_permutation_threshold(ref.out_p_fraud, time_units(ref.event_time, unit), cur.out_p_fraud,
                                       time_units(cur.event_time, unit), normed_wasserstein, alpha, draws)
    return plain, bool(plain and score >= floor)


def test_calm_bursty_windows_rarely_drift():
    """100 calm windows (7 days against the 28 before, same process): the row-count floor alone flags many
    (episodes cluster rows), the unit permutation test at alpha 0.01 at most 2."""
    rng = np.random.default_rng(11)
    plain_hits, unit_hits = 0, 0
    for _ in range(100):
        both = bursty_days(rng, "2026-03-01", 35)
        split = pd.Timestamp("2026-03-29")
        plain, unit = window_verdicts(both[both.event_time < split], both[both.event_time >= split], 0.01, 199)
        plain_hits += plain
        unit_hits += unit
    assert plain_hits >= 15 and unit_hits <= 2, (plain_hits, unit_hits)


def test_sustained_shift_is_caught():
    """A new fraud pattern on every day of the window (background high scores 1% -> 12% of rows, episodes as before)
    is caught in at least 95 of 100 windows. (The price of counting days, not rows: a 1% -> 8% rise, about one
    episode's worth of rows a day, is caught in ~90%, 1% -> 4% in ~40%; such a rise shows in recall once labels come.)"""
    rng = np.random.default_rng(12)
    caught = 0
    for _ in range(100):
        ref = bursty_days(rng, "2026-03-01", 28)
        cur = bursty_days(rng, "2026-03-29", 7, fraud_share=0.12)
        caught += window_verdicts(ref, cur, 0.01, 199)[1]
    assert caught >= 95, caught


def test_units_are_whole_days_from_the_first_row():
    times = pd.Series(pd.to_datetime(["2026-03-01 05:00", "2026-03-01 23:00", "2026-03-02 04:59", "2026-03-02 05:00",
                                      None]))
    assert time_units(times, pd.Timedelta(days=1)).tolist() == [0, 0, 0, 1, -1]


def test_too_few_units_or_draws_give_no_floor():
    ref, cur = pd.Series(np.arange(40.0)), pd.Series(np.arange(10.0))
    one_unit = np.zeros(40, dtype=np.int64)
    assert unit_permutation_threshold(ref, one_unit, cur, np.zeros(10, np.int64), normed_wasserstein, 0.01, 199) \
        is None
    units = np.repeat(np.arange(4), 10)
    # 5 units, 1 to the window: 5 splits cannot reach p <= 0.01
    assert unit_permutation_threshold(ref, units, cur, np.zeros(10, np.int64), normed_wasserstein, 0.01, 199) is None
    assert unit_permutation_threshold(ref, units, cur, np.zeros(10, np.int64), normed_wasserstein, 0.01, 50) is None


@pytest.fixture(scope="module")
def risk() -> FamilyMonitorConfig:
    return load_monitoring_config().family("risk")


def test_monitor_keeps_an_episode_week_quiet_and_flags_a_shift(risk):
    """End to end with the shipped settings: after a reference month without episodes, a window holding two days of
    brushing drifts under the row-count and reference-block floors, not with the unit test; a sustained rise of high
    scores on every day drifts with it."""
    rng = np.random.default_rng(5)
    ref = bursty_days(rng, "2026-03-01", 28, episodes_per_day=0.0)
    calm = bursty_days(rng, "2026-03-29", 7, episodes_per_day=0.0)
    brushing = pd.DataFrame({  # one merchant's 2-day episode: 25 orders a day, all scored high
        "event_time": pd.Timestamp("2026-03-31") + pd.to_timedelta(rng.integers(0, 2 * 86400, 50), unit="s"),
        "out_p_fraud": rng.beta(8, 2, 50)})
    cur = pd.concat([calm, brushing], ignore_index=True)
    kwargs = dict(feature_columns=[], prediction_columns=["out_p_fraud"], time_column="event_time",
                  block=pd.Timedelta(days=7))
    off = compute_drift(ref, cur, risk.model_copy(update={"permutation_alpha": 0.0}), **kwargs).predictions[0]
    on = compute_drift(ref, cur, risk, **kwargs).predictions[0]
    assert off.drifted and not on.drifted, (off, on)
    assert on.threshold > off.threshold and on.score == off.score
    shifted = bursty_days(rng, "2026-03-29", 7, fraud_share=0.05, episodes_per_day=0.0)
    found = compute_drift(ref, shifted, risk, **kwargs).predictions[0]
    assert found.drifted, found


def test_draws_must_reach_alpha():
    with pytest.raises(ValueError, match="permutation_draws"):
        FamilyMonitorConfig(permutation_alpha=0.001, permutation_draws=99,
                            performance={"metric": "mae", "backtest_metrics": ["mae"], "rule": "relative_increase",
                                         "limit": 0.2})
