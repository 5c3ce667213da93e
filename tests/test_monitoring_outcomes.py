"""Delayed labels: late labels are matched by id, missing labels are not negatives; thresholds per family."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from monitoring.config import load_monitoring_config
from monitoring.outcomes import ingest_outcomes, join_outcomes, load_outcomes
from monitoring.performance import (WindowPerformance, compare_with_backtest, risk_performance,
                                    served_baseline, window_performance)
from monitoring.predlog import read_prediction_log, write_prediction_records
from tradecast.errors import DataValidationError


def risk_records(scores: list[float], day: str) -> list[dict]:
    return [{"prediction_id": f"p{i}", "request_id": f"r{i}", "logged_at": f"{day}T10:{i:02d}:00Z", "family": "risk",
             "endpoint": "score_risk", "model_name": "tradecast-risk", "model_version": "3",
             "event_time": f"{day}T10:{i:02d}:00", "entity": {"order_id": f"O{i}"},
             "inputs": {"order_id": f"O{i}", "amount": 10.0 + i}, "features": {"amount": 10.0 + i},
             "outputs": {"p_fraud": s, "p_compliance": 0.01, "risk_level": "low", "reasons": ["x"]},
             "defaults_used": []} for i, s in enumerate(scores)]


def test_late_labels_match_and_missing_labels_are_not_negatives(tmp_home, tmp_path):
    # 8 orders scored on 1 Nov; O6 and O7 score highest but their chargebacks have not arrived
    scores = [0.9, 0.8, 0.1, 0.2, 0.3, 0.05, 0.95, 0.97]
    write_prediction_records("risk", risk_records(scores, "2026-11-01"))
    first = tmp_path / "risk_week1.csv"
    pd.DataFrame({"order_id": ["O2", "O3", "O4", "O5"], "is_fraud": ["false"] * 4}).to_csv(first, index=False)
    ingest_outcomes("risk", first)
    # the chargebacks for O0 and O1 arrive 40 days later, in a separate file
    late = tmp_path / "risk_chargebacks.csv"
    pd.DataFrame({"order_id": ["O0", "O1"], "is_fraud": [True, True],
                  "fraud_reported_at": ["2026-12-11", "2026-12-12"]}).to_csv(late, index=False)
    result = ingest_outcomes("risk", late)
    assert (result.rows_new, result.rows_total) == (2, 6)

    log = read_prediction_log("risk", datetime(2026, 11, 1), datetime(2026, 11, 2)).frame
    joined = join_outcomes(log, load_outcomes("risk"), "risk")
    assert joined["labelled"].tolist() == [True] * 6 + [False, False]
    assert joined.loc[joined.order_id.isin(["O0", "O1"]), "y_is_fraud"].tolist() == [True, True]
    perf = risk_performance(joined)
    assert (perf.n_predictions, perf.n_labelled, perf.n_positives) == (8, 6, 2)
    # both frauds outscore every known negative: recall 1.0. Counting O6/O7 as negatives would push the
    # false-alarm threshold above 0.9 and report recall 0.
    assert perf.metrics["recall_at_3pct_fpr"] == 1.0
    assert perf.metrics["fraud_rate"] == pytest.approx(2 / 6)

    # as of 1 Dec the chargebacks had not been reported yet: those orders are unlabelled, not negatives
    before = join_outcomes(log, load_outcomes("risk"), "risk", as_of=datetime(2026, 12, 1))
    assert before["labelled"].sum() == 4
    assert risk_performance(before).n_positives == 0


def test_delay_transit_from_delivery_time_and_late_flag(tmp_home, tmp_path):
    preds = pd.DataFrame({"shipment_id": ["A", "B", "C"], "event_time": pd.to_datetime(["2026-11-01"] * 3),
                          "in_promised_days": [5.0, 5.0, 5.0], "out_transit_days_p50": [5.0, 6.0, 4.0]})
    src = tmp_path / "deliveries.csv"
    pd.DataFrame({"shipment_id": ["A", "B"], "delivered_at": ["2026-11-08T00:00", "2026-11-05T12:00"]}).to_csv(
        src, index=False)
    ingest_outcomes("delay", src)
    joined = join_outcomes(preds, load_outcomes("delay"), "delay")
    assert joined["y_transit_days"].tolist()[:2] == [7.0, 4.5]
    assert joined["y_late"].tolist()[:2] == [True, False]
    assert joined["labelled"].tolist() == [True, True, False]
    perf = window_performance("delay", joined)
    assert perf.n_labelled == 2 and perf.metrics["mae"] == pytest.approx((2.0 + 1.5) / 2)
    # as of 6 Nov, A was still in transit
    assert join_outcomes(preds, load_outcomes("delay"), "delay", as_of=datetime(2026, 11, 6))["labelled"].sum() == 1


def test_demand_join_on_sku_market_date(tmp_home, tmp_path):
    preds = pd.DataFrame({"sku_id": ["K1", "K1", "K2"], "market": ["DE", "DE", "MY"],
                          "date": ["2026-11-03", "2026-11-04", "2026-11-03"],
                          "out_p10": [5.0, 5.0, 1.0], "out_p50": [10.0, 10.0, 2.0], "out_p90": [15.0, 15.0, 3.0]})
    src = tmp_path / "sales.csv"
    pd.DataFrame({"sku_id": ["K1", "K2", "K9"], "market": ["DE", "MY", "US"],
                  "date": ["2026-11-03", "2026-11-03", "2026-11-03"], "units": [12, 2, 7]}).to_csv(src, index=False)
    ingest_outcomes("demand", src)
    joined = join_outcomes(preds, load_outcomes("demand"), "demand")
    assert joined["labelled"].tolist() == [True, False, True]
    perf = window_performance("demand", joined)
    assert perf.metrics["accuracy"] == pytest.approx(1 - 2 / 14)


def test_outcome_merge_updates_and_never_erases(tmp_home, tmp_path):
    a = tmp_path / "a.csv"
    pd.DataFrame({"order_id": ["O1", "O2"], "is_fraud": ["false", "false"],
                  "is_compliance_issue": ["true", "false"]}).to_csv(a, index=False)
    ingest_outcomes("risk", a)
    b = tmp_path / "b.csv"
    pd.DataFrame({"order_id": ["O2"], "is_fraud": ["true"], "fraud_reported_at": ["2026-12-30"]}).to_csv(b, index=False)
    result = ingest_outcomes("risk", b)
    assert (result.rows_new, result.rows_updated) == (0, 1)
    known = load_outcomes("risk").set_index("order_id")
    assert bool(known.loc["O2", "is_fraud"]) is True
    assert bool(known.loc["O1", "is_compliance_issue"]) is True
    assert bool(known.loc["O2", "is_compliance_issue"]) is False  # not in file b: kept


def test_bad_outcome_file_names_the_column(tmp_home, tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"shipment_id": ["A", None], "transit_days": ["3", "soon"], "colour": ["r", "g"]}).to_csv(
        bad, index=False)
    with pytest.raises(DataValidationError) as err:
        ingest_outcomes("delay", bad)
    text = str(err.value)
    assert "colour" in text
    assert not (tmp_home / "outcomes" / "delay.parquet").exists()


@pytest.mark.parametrize("family,window,backtest,breach", [
    ("demand", 0.70, 0.81, True),   # down 11 points > 10
    ("demand", 0.72, 0.81, False),  # down 9 points
    ("delay", 2.5, 2.0, True),      # MAE +25% > 20%
    ("delay", 2.3, 2.0, False),     # +15%
    ("risk", 0.40, 0.60, True),     # recall down 20 points > 15
    ("risk", 0.50, 0.60, False),
])
def test_performance_rules_per_family(family, window, backtest, breach):
    rule = load_monitoring_config().family(family).performance.model_copy(update={"baseline": "backtest"})
    perf = WindowPerformance(n_predictions=1000, n_labelled=800, n_positives=50, metrics={rule.metric: window},
                             n_negatives=750)
    check = compare_with_backtest(perf, {rule.backtest_metrics[0]: backtest}, rule)
    assert check.breached is breach
    assert check.status == ("breach" if breach else "ok")


def test_served_baseline_needs_enough_labels():
    rule = load_monitoring_config().family("delay").performance
    assert rule.baseline == "served"
    assert served_baseline(WindowPerformance(100, 10, None, {"mae": 1.0}), rule) is None
    baseline = served_baseline(WindowPerformance(100, 90, None, {"mae": 1.0}), rule)
    check = compare_with_backtest(WindowPerformance(100, 90, None, {"mae": 1.3}), baseline, rule)
    assert check.breached and check.backtest_metric == "served:mae"


def test_too_few_labels_is_not_judged():
    rule = load_monitoring_config().family("risk").performance
    perf = WindowPerformance(n_predictions=1000, n_labelled=50, n_positives=1, metrics={rule.metric: 0.0})
    check = compare_with_backtest(perf, {rule.backtest_metrics[0]: 0.9}, rule)
    assert check.status == "not_enough_labels" and not check.breached
    assert np.isclose(check.label_coverage, 0.05)


def test_reads_records_written_by_the_serving_logger(tmp_home):
    """The reader understands what serving.prediction_log writes (same fixed format)."""
    from datetime import timezone

    from serving.predict import LoggedBatch
    from serving.prediction_log import PredictionLogger

    inputs = pd.DataFrame({"shipment_id": ["S1", "S2"], "lane": ["CN-SZX>DE", "CN-SZX>MY"], "mode": ["sea", "air"],
                           "promised_days": [35.0, 9.0],
                           "created_at": pd.to_datetime(["2026-11-20T08:00", "2026-11-20T09:30"])})
    batch = LoggedBatch(family="delay", endpoint="predict_delay", request_id="req1", model_name="tradecast-delay",
                        model_version="4", logged_at=datetime(2026, 11, 20, 10, tzinfo=timezone.utc),
                        item_index=np.array([0, 1]), inputs=inputs,
                        features=pd.DataFrame({"lane_transit_median_7d": [31.0, 8.5]}),
                        outputs=pd.DataFrame({"transit_days_p50": [33.0, 8.0], "p_late": [0.4, 0.1]}),
                        defaults_used=np.array([False, True]))
    logger = PredictionLogger(fsync=False)
    logger.append(batch)
    logger.flush()
    frame = read_prediction_log("delay", datetime(2026, 11, 20), datetime(2026, 11, 21)).frame
    assert frame["shipment_id"].tolist() == ["S1", "S2"]
    assert frame["f_lane_transit_median_7d"].tolist() == [31.0, 8.5]
    assert frame["out_transit_days_p50"].tolist() == [33.0, 8.0]
    assert frame["model_version"].tolist() == ["4", "4"]
    assert frame["event_time"].tolist() == list(pd.to_datetime(["2026-11-20T08:00", "2026-11-20T09:30"]))


def test_segment_breach_found_only_where_the_shift_is():
    from monitoring.performance import segment_checks

    rng = np.random.default_rng(0)
    rule = load_monitoring_config().family("delay").performance

    def period(n_sea_eu: int, extra: float) -> pd.DataFrame:
        modes = ["air"] * 400 + ["sea"] * n_sea_eu + ["sea"] * 100
        markets = ["US"] * 400 + ["DE"] * n_sea_eu + ["MY"] * 100
        p50 = rng.uniform(5, 40, len(modes))
        err = rng.normal(0, 2.0, len(modes))
        err[400:400 + n_sea_eu] += extra
        return pd.DataFrame({"in_mode": modes, "in_destination_market": markets, "out_transit_days_p50": p50,
                             "y_transit_days": p50 + err})

    before, calm, hit = period(25, 0.0), period(25, 0.0), period(25, 10.0)
    assert not any(c.breached for c in segment_checks("delay", calm, before, rule))
    checks = {c.metric: c for c in segment_checks("delay", hit, before, rule)}
    assert checks["mae[sea/europe]"].breached
    assert not checks["mae[air/north_america]"].breached and not checks["mae[sea/sea]"].breached


def test_label_arrival_window_selects_the_outcomes_that_arrived(tmp_home, tmp_path):
    """Segments are judged on the deliveries that came in during the window, whatever the shipment's age."""
    from monitoring.performance import label_arrival_times, select_arrived

    created = {"OLD": "2026-09-01", "MID": "2026-11-10", "NEW": "2026-11-18", "EARLY": "2026-11-01",
               "OPEN": "2026-11-05", "FUTURE": "2026-10-01"}
    delivered = {"OLD": "2026-11-17T08:00", "MID": "2026-11-15", "NEW": "2026-11-21T23:00", "EARLY": "2026-11-14T23:59",
                 "FUTURE": "2026-11-23"}  # OPEN: not delivered yet; FUTURE: after `as_of`
    preds = pd.DataFrame({"shipment_id": list(created), "event_time": pd.to_datetime(list(created.values())),
                          "out_transit_days_p50": 10.0})
    src = tmp_path / "deliveries.csv"
    pd.DataFrame({"shipment_id": list(delivered), "delivered_at": list(delivered.values())}).to_csv(src, index=False)
    ingest_outcomes("delay", src)
    joined = join_outcomes(preds, load_outcomes("delay"), "delay", as_of=datetime(2026, 11, 22))
    arrived = label_arrival_times("delay", joined)
    assert arrived.isna().tolist() == [False, False, False, False, True, True]  # OPEN unknown, FUTURE not yet
    window = select_arrived("delay", joined, datetime(2026, 11, 15), datetime(2026, 11, 22))
    assert sorted(window["shipment_id"]) == ["MID", "NEW", "OLD"]  # a 77-day-old shipment counts when it arrives
    assert window.set_index("shipment_id").loc["OLD", "y_transit_days"] == pytest.approx(77 + 8 / 24)
    before = select_arrived("delay", joined, datetime(2026, 10, 18), datetime(2026, 11, 15))
    assert before["shipment_id"].tolist() == ["EARLY"]


def _sea_europe_period(rng, n_sea_eu: int, extra: float) -> pd.DataFrame:
    """Absolute errors are skewed (gamma), like transit days: a t-test on a handful of rows must still hold."""
    modes = ["air"] * 200 + ["sea"] * n_sea_eu + ["sea"] * 60
    markets = ["US"] * 200 + ["DE"] * n_sea_eu + ["MY"] * 60
    p50 = rng.uniform(5, 40, len(modes))
    err = rng.gamma(1.0, 2.0, len(modes)) * rng.choice([-1.0, 1.0], len(modes))
    err[200:200 + n_sea_eu] += extra
    return pd.DataFrame({"in_mode": modes, "in_destination_market": markets, "out_transit_days_p50": p50,
                         "y_transit_days": p50 + err})


def test_few_arrived_labels_flag_a_segment_but_noise_does_not():
    """With the delay config (label-arrival window), 6 late sea>Europe deliveries breach that segment alone; on
    same-distribution windows of 6 rows the share of monitor runs with any breach stays at the configured alpha
    (Mann-Whitney, Bonferroni over segments, effect size)."""
    from monitoring.performance import segment_checks

    rule = load_monitoring_config().family("delay").performance
    assert rule.segment_window == "7d" and rule.min_segment_window_labels == 5 and rule.segment_alpha == 0.001
    rng = np.random.default_rng(3)
    found = 0
    for _ in range(100):
        hit = {c.metric: c for c in segment_checks("delay", _sea_europe_period(rng, 6, 10.0),
                                                   _sea_europe_period(rng, 25, 0.0), rule,
                                                   min_judged=rule.min_segment_window_labels)}
        found += hit["mae[sea/europe]"].breached
        assert not hit["mae[air/north_america]"].breached
        assert hit["mae[sea/europe]"].n_labelled == 6
    assert found >= 95
    false_alarms = 0
    for _ in range(500):
        checks = segment_checks("delay", _sea_europe_period(rng, 6, 0.0), _sea_europe_period(rng, 25, 0.0), rule,
                                min_judged=rule.min_segment_window_labels)
        false_alarms += any(c.breached for c in checks)
    assert false_alarms <= 2  # alpha 0.001 per run: 0.5 expected in 500
    too_few = segment_checks("delay", _sea_europe_period(rng, 4, 10.0), _sea_europe_period(rng, 25, 0.0), rule,
                             min_judged=rule.min_segment_window_labels)
    assert "mae[sea/europe]" not in {c.metric for c in too_few}


def test_alert_names_the_worst_segment_first():
    from monitoring.alerts import alert_reasons
    from monitoring.performance import PerformanceCheck

    def seg(name: str, change: float, status: str = "breach") -> PerformanceCheck:
        return PerformanceCheck(metric=f"mae[{name}]", status=status, window_value=1 + change, backtest_value=1.0,
                                backtest_metric=None, rule="relative_increase", limit=0.5, change=change,
                                reason=f"segment {name}")

    reasons = alert_reasons(None, None, [seg("air/europe", 0.6), seg("sea/europe", 2.2), seg("rail/asia", 3.0, "ok")])
    assert [r.message for r in reasons] == ["segment sea/europe", "segment air/europe"]


def test_overdue_shipments_are_known_to_miss_their_p90_before_they_arrive(tmp_home, tmp_path):
    """A shipment still undelivered when its P90 runs out is overdue; one delivered in time is not; one whose
    deadline is outside the stretch is not selected; a delivery after `as_of` is not yet known (overdue)."""
    from monitoring.performance import select_due

    created = {"LATE": "2026-11-01", "OPEN": "2026-11-02", "ONTIME": "2026-11-03", "NOTDUE": "2026-11-12",
               "UNSEEN": "2026-11-04"}
    delivered = {"LATE": "2026-11-19", "ONTIME": "2026-11-12", "NOTDUE": "2026-11-13", "UNSEEN": "2026-11-23"}
    preds = pd.DataFrame({"shipment_id": list(created), "event_time": pd.to_datetime(list(created.values())),
                          "out_transit_days_p50": 8.0, "out_transit_days_p90": 14.0})
    src = tmp_path / "deliveries.csv"
    pd.DataFrame({"shipment_id": list(delivered), "delivered_at": list(delivered.values())}).to_csv(src, index=False)
    ingest_outcomes("delay", src)
    joined = join_outcomes(preds, load_outcomes("delay"), "delay", as_of=datetime(2026, 11, 22))
    due = select_due(joined, datetime(2026, 11, 15), datetime(2026, 11, 21)).set_index("shipment_id")["overdue"]
    # deadlines: LATE 11-15, OPEN 11-16, ONTIME 11-17, UNSEEN 11-18 are due; NOTDUE's (11-26) is not
    assert due.to_dict() == {"LATE": True, "OPEN": True, "ONTIME": False, "UNSEEN": True}


def _due_period(rng, n_sea_eu: int, share_eu: float, share_rest: float = 0.1) -> pd.DataFrame:
    modes = ["air"] * 200 + ["sea"] * n_sea_eu + ["sea"] * 60
    markets = ["US"] * 200 + ["DE"] * n_sea_eu + ["MY"] * 60
    overdue = rng.random(len(modes)) < share_rest
    overdue[200:200 + n_sea_eu] = rng.random(n_sea_eu) < share_eu
    return pd.DataFrame({"in_mode": modes, "in_destination_market": markets, "overdue": overdue})


def test_overdue_check_flags_a_lane_whose_shipments_all_run_late_but_not_noise():
    """6 of 6 sea>Europe shipments past their P90 breach that segment alone; with the usual 10% overdue share
    the share of runs with any breach stays within the alpha (binomial, Bonferroni over segments); too few due
    shipments are not judged."""
    from monitoring.performance import overdue_checks

    rule = load_monitoring_config().family("delay").performance
    assert rule.overdue_check and rule.overdue_min_share == 0.5
    rng = np.random.default_rng(5)
    found = 0
    for _ in range(100):
        hit = {c.metric: c for c in overdue_checks(_due_period(rng, 6, 1.0), _due_period(rng, 25, 0.1), rule,
                                                   alpha=rule.segment_alpha / 2)}
        found += hit["overdue_share[sea/europe]"].breached
        assert not hit["overdue_share[air/north_america]"].breached
        assert hit["overdue_share[sea/europe]"].segment == {"in_mode": "sea", "region": "europe"}
    assert found >= 95
    false_alarms = sum(any(c.breached for c in overdue_checks(_due_period(rng, 6, 0.1), _due_period(rng, 25, 0.1),
                                                              rule, alpha=rule.segment_alpha / 2))
                       for _ in range(500))
    assert false_alarms <= 2
    too_few = overdue_checks(_due_period(rng, 4, 1.0), _due_period(rng, 25, 0.1), rule)
    assert "overdue_share[sea/europe]" not in {c.metric for c in too_few}
