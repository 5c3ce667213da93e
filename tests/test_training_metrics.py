"""Metric functions, baselines and the backtest splitter on small hand-computed examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import metrics as m
from training.backtest import rolling_cutoffs, rolling_origin_folds, run_backtest, metrics_by_fold, window_id
from training.baselines import LaneMedianBaseline, moving_average, rules_risk_score, seasonal_naive
from tradecast.errors import TradecastError


def test_accuracy_wape_bias_by_hand():
    y = [10, 0, 5, 5]
    f = [8, 1, 5, 7]
    # |err| = 2 + 1 + 0 + 2 = 5 over 20 units
    assert m.wape(y, f) == pytest.approx(0.25)
    assert m.accuracy(y, f) == pytest.approx(0.75)
    assert m.bias(y, f) == pytest.approx((21 - 20) / 20)
    assert np.isnan(m.wape([0, 0], [1, 1]))


def test_mase_and_scale_by_hand():
    hist = pd.DataFrame({"s": ["a"] * 4, "t": [1, 2, 3, 4], "v": [1.0, 3.0, 2.0, 6.0]})
    # lag-1 naive errors: 2, 1, 4 -> mean 7/3
    scale = m.seasonal_naive_scale(hist, ["s"], "t", "v", season=1)
    assert scale == pytest.approx(7 / 3)
    assert m.mase([2, 4], [1, 4], scale) == pytest.approx(0.5 / (7 / 3))


def test_pinball_and_coverage_by_hand():
    y = np.array([10.0, 10.0])
    # under-forecast by 2 at q=0.9 costs 0.9*2; over-forecast by 2 costs 0.1*2
    assert m.pinball_loss(y, [8, 12], 0.9) == pytest.approx((1.8 + 0.2) / 2)
    assert m.pinball_loss(y, [10, 10], 0.5) == 0
    assert m.interval_coverage([1, 5, 9], [0, 6, 8], [2, 7, 10]) == pytest.approx(2 / 3)


def test_recall_at_false_alarm_rate_by_hand():
    # 100 negatives with scores 0..0.99, 4 positives
    neg = np.arange(100) / 100
    pos = np.array([0.995, 0.985, 0.975, 0.5])
    labels = np.r_[np.zeros(100), np.ones(4)]
    scores = np.r_[neg, pos]
    # 3% of 100 negatives = 3 false alarms allowed: threshold above 0.96 -> flags 0.97, 0.98, 0.99 negatives
    assert m.recall_at_false_alarm_rate(labels, scores, 0.03) == pytest.approx(0.75)
    assert m.recall_at_false_alarm_rate(labels, scores, 0.0) == pytest.approx(0.25)
    thr = m.threshold_at_false_alarm_rate(labels, scores, 0.03)
    assert np.mean(neg >= thr) <= 0.03


def test_brier_ece_pr_auc_by_hand():
    y = [0, 0, 1, 1]
    p = [0.1, 0.3, 0.6, 0.9]
    assert m.brier(y, p) == pytest.approx((0.01 + 0.09 + 0.16 + 0.01) / 4)
    # bins 0.1->bin1, 0.3->bin3, 0.6->bin6, 0.9->bin9; each alone: gaps .1 .3 .4 .1 -> mean .225
    assert m.expected_calibration_error(y, p) == pytest.approx(0.225)
    assert m.pr_auc(y, p) == pytest.approx(1.0)
    assert m.roc_auc(y, [0.9, 0.1, 0.6, 0.3]) == pytest.approx(0.5)


def test_delay_metrics_by_hand():
    out = m.delay_metrics(actual_days=[10, 5, 8], p50=[7, 5, 9], p90=[12, 4.5, 8.5],
                          promised_days=[7, 6, 7], p_late=[0.9, 0.1, 0.6], late=[1, 0, 1])
    assert out["mae"] == pytest.approx(4 / 3)
    assert out["p90_coverage"] == pytest.approx(2 / 3)
    # only shipment 1 is > 2 days late; predicted p50 7 is not > 7 + 2 -> not alerted
    assert out["recall_48h"] == 0.0
    assert out["late_auc"] == pytest.approx(1.0)


def test_metrics_reject_nan_and_length_mismatch():
    with pytest.raises(ValueError):
        m.wape([1, 2], [1])
    with pytest.raises(ValueError):
        m.brier([1, np.nan], [0.1, 0.2])


def _history():
    dates = pd.date_range("2024-01-01", periods=21, freq="D")
    return pd.DataFrame({"sku_id": "s1", "market": "DE", "date": dates, "units": np.arange(21, dtype=float)})


def test_seasonal_naive_uses_only_history_before_as_of():
    hist = _history()
    as_of = pd.Timestamp("2024-01-15")  # sees days 0..13 (units 0..13)
    q = pd.DataFrame({"sku_id": "s1", "market": "DE", "as_of": as_of,
                      "target_date": [as_of, as_of + pd.Timedelta(days=6), as_of + pd.Timedelta(days=7),
                                      as_of + pd.Timedelta(days=20)]})
    got = seasonal_naive(hist, q, season=7)
    # h=1 -> target-7 = day 7; h=7 -> day 13; h=8 -> target-14 = day 7; h=21 -> target-21 = day 13
    assert got.tolist() == [7.0, 13.0, 7.0, 13.0]
    unknown = q.assign(sku_id="new")
    assert seasonal_naive(hist, unknown, season=7).tolist() == [0.0] * 4


def test_moving_average_window_before_as_of():
    hist = _history()
    q = pd.DataFrame({"sku_id": ["s1", "s1"], "market": ["DE", "DE"],
                      "as_of": [pd.Timestamp("2024-01-15"), pd.Timestamp("2024-01-03")],
                      "target_date": [pd.Timestamp("2024-01-20"), pd.Timestamp("2024-01-03")]})
    got = moving_average(hist, q, window=7)
    # days 7..13 -> mean 10; as_of day 2: days 0,1 observed within the 7-day window -> (0+1)/7
    assert got[0] == pytest.approx(10.0)
    assert got[1] == pytest.approx(1 / 7)


def test_lane_median_baseline_falls_back():
    X = pd.DataFrame({"lane": ["a", "a", "a", "b"], "mode": ["air", "air", "air", "sea"]})
    base = LaneMedianBaseline().fit(X, [1.0, 2.0, 9.0, 30.0], late=[0, 0, 1, 1])
    out = base.predict_frame(pd.DataFrame({"lane": ["a", "c", "z"], "mode": ["air", "sea", "rail"]}))
    assert out["p50"].tolist() == [2.0, 30.0, pytest.approx(5.5)]
    assert out["p_late"].iloc[0] == pytest.approx(1 / 3)


def test_rules_score_orders_by_risk():
    frame = pd.DataFrame({"ip_country": ["DE", "US"], "card_country": ["DE", "DE"], "shipping_country": ["DE", "FR"],
                          "account_age_days": [400, 1], "ip_orders_1h": [1, 8]})
    s = rules_risk_score(frame, ["ip_orders_1h"], new_account_days=7)
    assert s[1] > s[0]
    assert s[1] == pytest.approx(2 + 1 + 0.8)


def test_rolling_origin_folds_respect_time_and_label_lag():
    t = pd.Series(pd.date_range("2024-01-01", periods=100, freq="D"))
    label = t + pd.Timedelta(days=5)  # outcome known 5 days later
    cutoffs = rolling_cutoffs(t.max(), folds=3, step=pd.Timedelta(days=10), test=pd.Timedelta(days=10))
    assert cutoffs == sorted(cutoffs) and len(cutoffs) == 3
    folds = rolling_origin_folds(t, label, cutoffs, pd.Timedelta(days=10))
    for f in folds:
        assert label.iloc[f.train_index].max() < f.cutoff
        assert t.iloc[f.test_index].min() >= f.cutoff
        assert t.iloc[f.test_index].max() < f.test_end
        assert len(np.intersect1d(f.train_index, f.test_index)) == 0
    assert "/10d" in window_id(folds)
    with pytest.raises(TradecastError, match="fold 1"):
        rolling_origin_folds(t, label, [pd.Timestamp("2023-01-01")], pd.Timedelta(days=10))


def test_run_backtest_scores_every_candidate_on_the_same_rows():
    frame = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=60, freq="D"), "y": np.arange(60.0)})
    folds = rolling_origin_folds(frame["t"], frame["t"], [pd.Timestamp("2024-02-01"), pd.Timestamp("2024-02-10")],
                                 pd.Timedelta(days=9))
    cands = {"last": lambda tr, te: pd.DataFrame({"pred": np.full(len(te), tr["y"].iloc[-1])}),
             "mean": lambda tr, te: pd.DataFrame({"pred": np.full(len(te), tr["y"].mean())})}
    preds, secs = run_backtest(frame, folds, cands)
    assert set(secs) == {"last", "mean"}
    table = metrics_by_fold(preds, frame, lambda r: {"mae": float((r["y"] - r["pred"]).abs().mean())})
    assert set(table["fold"]) == {"1", "2", "all"}
    last = table[(table.candidate == "last") & (table.fold == "all")]["mae"].iloc[0]
    mean = table[(table.candidate == "mean") & (table.fold == "all")]["mae"].iloc[0]
    assert last < mean
