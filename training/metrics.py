"""Evaluation metrics for the three families, as plain functions of arrays.

demand: accuracy (1 - WAPE), MASE, bias, pinball loss, P10-P90 coverage.
delay:  MAE, P90 coverage, AUC and Brier for late, recall of shipments more than 48 h late.
risk:   PR-AUC, recall at a fixed false-alarm rate, Brier, expected calibration error.
Every function ignores nothing silently: inputs must have equal length and no NaN.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

ArrayLike = Iterable[float] | np.ndarray | pd.Series


def _arrays(*values: ArrayLike) -> list[np.ndarray]:
    arrays = [np.asarray(v, dtype="float64") for v in values]
    n = len(arrays[0])
    for a in arrays[1:]:
        if len(a) != n:
            raise ValueError(f"metric inputs differ in length: {[len(x) for x in arrays]}")
    for a in arrays:
        if np.isnan(a).any():
            raise ValueError("metric inputs contain NaN")
    return arrays


# ---------------------------------------------------------------- demand
def wape(actual: ArrayLike, forecast: ArrayLike) -> float:
    """Weighted absolute percentage error: sum |y - f| / sum |y| (NaN when there are no units)."""
    y, f = _arrays(actual, forecast)
    total = np.abs(y).sum()
    return float(np.abs(y - f).sum() / total) if total > 0 else float("nan")


def accuracy(actual: ArrayLike, forecast: ArrayLike) -> float:
    """Forecast accuracy as the industry quotes it: 1 - WAPE (can be negative for very bad forecasts)."""
    return 1.0 - wape(actual, forecast)


def bias(actual: ArrayLike, forecast: ArrayLike) -> float:
    """Relative bias: sum(f - y) / sum(y); positive means over-forecasting."""
    y, f = _arrays(actual, forecast)
    total = np.abs(y).sum()
    return float((f - y).sum() / total) if total > 0 else float("nan")


def mase(actual: ArrayLike, forecast: ArrayLike, scale: float) -> float:
    """Mean absolute scaled error: MAE divided by `scale`, the in-sample MAE of the seasonal naive forecast."""
    y, f = _arrays(actual, forecast)
    if not scale or scale <= 0 or not np.isfinite(scale):
        return float("nan")
    return float(np.abs(y - f).mean() / scale)


def pinball_loss(actual: ArrayLike, forecast: ArrayLike, quantile: float) -> float:
    """Mean quantile (pinball) loss of one quantile forecast."""
    y, f = _arrays(actual, forecast)
    diff = y - f
    return float(np.mean(np.maximum(quantile * diff, (quantile - 1.0) * diff)))


def mean_pinball_loss(actual: ArrayLike, quantile_forecasts: dict[float, ArrayLike]) -> float:
    """Average pinball loss over several quantiles, e.g. {0.1: p10, 0.5: p50, 0.9: p90}."""
    return float(np.mean([pinball_loss(actual, f, q) for q, f in quantile_forecasts.items()]))


def interval_coverage(actual: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> float:
    """Share of actuals inside [lower, upper] (nominal 0.8 for a P10-P90 interval)."""
    y, lo, hi = _arrays(actual, lower, upper)
    return float(np.mean((y >= lo) & (y <= hi))) if len(y) else float("nan")


def seasonal_naive_scale(history: pd.DataFrame, series_cols: list[str], time_col: str, value_col: str,
                         season: int) -> float:
    """In-sample MAE of the seasonal naive forecast (lag `season` within each series), the MASE denominator."""
    ordered = history.sort_values(series_cols + [time_col])
    lagged = ordered.groupby(series_cols, sort=False, observed=True)[value_col].shift(season)
    err = (ordered[value_col] - lagged).abs().dropna()
    return float(err.mean()) if len(err) else float("nan")


def demand_metrics(actual: ArrayLike, p10: ArrayLike, p50: ArrayLike, p90: ArrayLike,
                   mase_scale: float | None = None) -> dict[str, float]:
    """All demand metrics for one set of forecasts."""
    out = {
        "accuracy": accuracy(actual, p50),
        "wape": wape(actual, p50),
        "bias": bias(actual, p50),
        "pinball": mean_pinball_loss(actual, {0.1: p10, 0.5: p50, 0.9: p90}),
        "coverage_p10_p90": interval_coverage(actual, p10, p90),
        "n": float(len(np.asarray(actual))),
    }
    if mase_scale is not None:
        out["mase"] = mase(actual, p50, mase_scale)
    return out


# ---------------------------------------------------------------- classification helpers
def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (NaN when only one class is present)."""
    from sklearn.metrics import roc_auc_score

    y, s = _arrays(labels, scores)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, s))


def pr_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the precision-recall curve (average precision)."""
    from sklearn.metrics import average_precision_score

    y, s = _arrays(labels, scores)
    if y.sum() == 0:
        return float("nan")
    return float(average_precision_score(y, s))


def brier(labels: ArrayLike, probabilities: ArrayLike) -> float:
    """Brier score: mean squared error of predicted probabilities."""
    y, p = _arrays(labels, probabilities)
    return float(np.mean((p - y) ** 2))


def expected_calibration_error(labels: ArrayLike, probabilities: ArrayLike, bins: int = 10) -> float:
    """ECE with equal-width bins: sum over bins of (bin share) x |mean predicted - observed rate|."""
    y, p = _arrays(labels, probabilities)
    if not len(y):
        return float("nan")
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    pred_sum = np.bincount(idx, weights=p, minlength=bins)
    obs_sum = np.bincount(idx, weights=y, minlength=bins)
    used = count > 0
    gaps = np.abs(pred_sum[used] - obs_sum[used]) / count[used]
    return float(np.sum(count[used] / len(y) * gaps))


def threshold_at_false_alarm_rate(labels: ArrayLike, scores: ArrayLike, rate: float) -> float:
    """Lowest score threshold (flag when score >= threshold) whose false-alarm rate on negatives is <= `rate`."""
    y, s = _arrays(labels, scores)
    neg = np.sort(s[y == 0])[::-1]
    if not len(neg):
        return float(np.min(s)) if len(s) else float("inf")
    allowed = int(np.floor(rate * len(neg)))  # negatives we may flag
    # flag scores strictly above the (allowed+1)-th highest negative; ties at that value stay unflagged
    cut = neg[allowed] if allowed < len(neg) else -np.inf
    return float(np.nextafter(cut, np.inf))


def recall_at_false_alarm_rate(labels: ArrayLike, scores: ArrayLike, rate: float = 0.03) -> float:
    """Recall (share of positives flagged) at the threshold whose false-alarm rate is at most `rate`."""
    y, s = _arrays(labels, scores)
    if y.sum() == 0:
        return float("nan")
    threshold = threshold_at_false_alarm_rate(y, s, rate)
    return float(np.mean(s[y == 1] >= threshold))


def classifier_metrics(labels: ArrayLike, probabilities: ArrayLike, false_alarm_rate: float = 0.03) -> dict[str, float]:
    """PR-AUC, ROC-AUC, recall at the false-alarm rate, Brier and ECE, plus the positive rate."""
    y, p = _arrays(labels, probabilities)
    return {
        "pr_auc": pr_auc(y, p),
        "roc_auc": roc_auc(y, p),
        "recall_at_fa": recall_at_false_alarm_rate(y, p, false_alarm_rate),
        "brier": brier(y, p),
        "ece": expected_calibration_error(y, p),
        "positive_rate": float(y.mean()) if len(y) else float("nan"),
        "n": float(len(y)),
    }


# ---------------------------------------------------------------- delay
def delay_metrics(actual_days: ArrayLike, p50: ArrayLike, p90: ArrayLike, promised_days: ArrayLike,
                  p_late: ArrayLike, late: ArrayLike, alert_hours: float = 48.0) -> dict[str, float]:
    """MAE, P90 coverage, late AUC and Brier, and recall/precision of the '> alert_hours late' alert.

    A shipment is alerted when its predicted P50 transit exceeds the promise by more than `alert_hours`.
    """
    y, f50, f90, promised, p, lt = _arrays(actual_days, p50, p90, promised_days, p_late, late)
    margin = alert_hours / 24.0
    very_late = (y - promised) > margin
    alerted = (f50 - promised) > margin
    return {
        "mae": float(np.mean(np.abs(y - f50))),
        "p90_coverage": float(np.mean(y <= f90)),
        "late_auc": roc_auc(lt, p),
        "late_brier": brier(lt, p),
        "recall_48h": float(alerted[very_late].mean()) if very_late.any() else float("nan"),
        "precision_48h": float(very_late[alerted].mean()) if alerted.any() else float("nan"),
        "late_rate": float(lt.mean()) if len(lt) else float("nan"),
        "n": float(len(y)),
    }
