"""The overdue check on standardised lateness: a diverted lane's shipments run far past their P90 (counted early,
before they arrive), calm misses only just past it; same-distribution windows raise no alarm."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from monitoring.config import load_monitoring_config
from monitoring.outcomes import ingest_outcomes, join_outcomes, load_outcomes
from monitoring.performance import lateness_threshold, overdue_checks, select_due, standardised_lateness

# Due shipments per 7-day window of each mode/region segment, as in the --scale small replay (sea/europe ~7 a week)
WEEKLY = {"express/sea": 67, "air/latam": 28, "express/europe": 26, "express/north_america": 25, "express/latam": 23,
          "air/sea": 19, "sea/latam": 12, "express/middle_east": 12, "sea/sea": 11, "sea/north_america": 8,
          "air/north_america": 7, "sea/europe": 7}
LANE = {"in_mode": "sea", "region": "europe"}
T3_Q90 = 1.6377  # 90th percentile of Student's t with 3 degrees of freedom


def _calm(rng, n: int, scale: float = 1.0) -> np.ndarray:
    """Calm lateness: Student-t (3 df) scaled so the P90 is its 90th percentile. Its tail (95th percentile 1.44,
    98th 2.13) is heavier than a normal's, like the no-scenario replay's (1.46, 2.91 pooled over segments)."""
    return scale * rng.standard_t(3, n) / T3_Q90


def _seen_now(rng, z: np.ndarray) -> np.ndarray:
    """Lateness as known in a monitor run: the window's deadlines passed 1-8 days ago (grace 1d, window 7d), so a
    shipment not delivered yet counts with 1 + days since its deadline / its spread (3-4.5 days on sea lanes)."""
    spread, since = rng.uniform(3.0, 4.5, len(z)), rng.uniform(1.0, 8.0, len(z))
    return np.minimum(z, 1.0 + since / spread)


def _period(rng, weeks: int, n_lane: int | None = None, diverted: int = 0, heavy: str | None = None) -> pd.DataFrame:
    """Due shipments of all segments over `weeks` (1: the window, seen now; 4: the reference_days before, known);
    `diverted` of sea/europe's `n_lane` run 7-14 days longer (red_sea); `heavy`: a segment whose P90 is too short
    (its lateness doubled in both periods)."""
    parts = []
    for seg, per_week in WEEKLY.items():
        n = n_lane if seg == "sea/europe" and n_lane else per_week * weeks
        z = _calm(rng, n, 2.0 if seg == heavy else 1.0)
        if seg == "sea/europe" and diverted:
            z[:diverted] += rng.uniform(7.0, 14.0, diverted) / rng.uniform(3.0, 4.5, diverted)
        if weeks == 1:
            z = _seen_now(rng, z)
        mode, region = seg.split("/")
        parts.append(pd.DataFrame({"in_mode": mode, "region": region, "lateness": z, "overdue": z > 1.0}))
    return pd.concat(parts, ignore_index=True)


def _lane_caught(checks) -> bool:
    return any(c.breached and c.segment == LANE for c in checks)


def test_lateness_is_standardised_and_a_lower_bound_while_undelivered(tmp_home, tmp_path):
    """(transit - P50) / (P90 - P50) for a delivered shipment; days elapsed at as_of for one not delivered yet (or
    delivered after as_of); select_due with as_of carries it beside `overdue`."""
    created = {"LATE": "2026-11-01", "OPEN": "2026-11-02", "ONTIME": "2026-11-03", "UNSEEN": "2026-11-04"}
    delivered = {"LATE": "2026-11-19", "ONTIME": "2026-11-12", "UNSEEN": "2026-11-23"}
    preds = pd.DataFrame({"shipment_id": list(created), "event_time": pd.to_datetime(list(created.values())),
                          "out_transit_days_p50": 8.0, "out_transit_days_p90": 14.0})
    src = tmp_path / "deliveries.csv"
    pd.DataFrame({"shipment_id": list(delivered), "delivered_at": list(delivered.values())}).to_csv(src, index=False)
    ingest_outcomes("delay", src)
    as_of = datetime(2026, 11, 22)
    joined = join_outcomes(preds, load_outcomes("delay"), "delay", as_of=as_of)
    late = dict(zip(joined["shipment_id"], standardised_lateness(joined, as_of)))
    assert late["LATE"] == (18 - 8) / 6 and late["ONTIME"] == (9 - 8) / 6
    assert late["OPEN"] == (20 - 8) / 6 and late["UNSEEN"] == (18 - 8) / 6  # elapsed by 22 Nov: lower bounds
    due = select_due(joined, datetime(2026, 11, 15), datetime(2026, 11, 21), as_of=as_of).set_index("shipment_id")
    assert due["lateness"].round(4).to_dict() == {k: round(v, 4) for k, v in late.items()}
    assert due["overdue"].to_dict() == {"LATE": True, "OPEN": True, "ONTIME": False, "UNSEEN": True}
    assert "lateness" not in select_due(joined, datetime(2026, 11, 15), datetime(2026, 11, 21)).columns


def test_lateness_threshold_is_a_conformal_rank_never_below_the_p90():
    """The ceil((m + 1) q)-th smallest of m values; at least 1 (the P90); None when m is too small for the rank."""
    values = np.arange(1, 100) / 10.0  # 0.1 .. 9.9, m = 99
    assert lateness_threshold(values, 0.95) == 9.5  # rank ceil(100 * 0.95) = 95
    assert lateness_threshold(values / 20.0, 0.95) == 1.0  # a reference whose tail stays inside the P90
    assert lateness_threshold(np.array([np.nan, 2.0, 3.0]), 0.95) is None  # 2 values: no 95% rank
    rng = np.random.default_rng(0)  # a new value exceeds it with probability <= 1 - q (here 5%)
    exceed = np.mean([rng.standard_normal() + 3 > lateness_threshold(rng.standard_normal(40) + 3, 0.95)
                      for _ in range(4000)])
    assert exceed <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 4000)


def test_lateness_catches_a_diverted_lane_early_but_not_noise():
    """Power and false alarms with the configured quantiles (the P90 and the calm 95th percentile) and the run's
    half of segment_alpha:
    - a lane whose 8 due shipments were all diverted (+7-14 days, seen 1-8 days after their P90) is caught in
      >= 95 of 100 draws (by the P90 count: the 95th-percentile count alone misses those seen a day after it);
    - with 6 diverted among 9 (the red_sea window of day 50, where 3 calm pre-event shipments are still due) it is
      caught clearly more often than by the P90 count alone (the former check; 39 vs 24 of 100 draws here), whose
      null share (10%) is too high for 9 shipments;
    - calm windows: <= 2 runs with any breach in 500, nor when a segment's P90 is too short in both periods (its
      own earlier share is the null)."""
    rule = load_monitoring_config().family("delay").performance
    assert rule.overdue_quantiles == [0.9, 0.95]
    alpha = rule.segment_alpha / 2
    rng = np.random.default_rng(7)
    assert sum(_lane_caught(overdue_checks(_period(rng, 1, 8, 8), _period(rng, 4), rule, alpha=alpha))
               for _ in range(100)) >= 95
    caught, caught_p90 = 0, 0
    for _ in range(100):
        now, before = _period(rng, 1, 9, 6), _period(rng, 4)
        caught += _lane_caught(overdue_checks(now, before, rule, alpha=alpha))
        caught_p90 += _lane_caught(overdue_checks(now.drop(columns="lateness"), before.drop(columns="lateness"),
                                                  rule, alpha=alpha))
    assert caught >= caught_p90 + 10, (caught, caught_p90)
    false_alarms = sum(any(c.breached for c in overdue_checks(_period(rng, 1), _period(rng, 4), rule, alpha=alpha))
                       for _ in range(500))
    assert false_alarms <= 2
    short_p90 = sum(any(c.breached for c in overdue_checks(_period(rng, 1, heavy="sea/sea"),
                                                           _period(rng, 4, heavy="sea/sea"), rule, alpha=alpha))
                    for _ in range(500))
    assert short_p90 <= 2


def test_breach_reason_names_the_segment_and_figures():
    """The reason names the segment, the counts (n), the shares, the threshold in spreads and the p-value."""
    rule = load_monitoring_config().family("delay").performance
    rng = np.random.default_rng(3)
    checks = overdue_checks(_period(rng, 1, 8, 8), _period(rng, 4), rule, alpha=rule.segment_alpha / 2)
    lane = next(c for c in checks if c.segment == LANE)
    assert lane.breached and lane.metric == "overdue_share[sea/europe]"
    assert lane.reason.startswith("segment sea/europe: ") and " of 8 shipments due in the window ran later than " \
        "9" in lane.reason and "% of all shipments due before" in lane.reason
    assert "p=" in lane.reason and "P50-to-P90 spreads" in lane.reason and "/12 segments x 2 count(s)" in lane.reason
