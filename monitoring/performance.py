"""Performance of logged predictions once their outcomes are known, against the champion's training backtest.

Metrics come from training.metrics so the window and the backtest are measured the same way. Only labelled
predictions count; the label coverage is reported beside every metric.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from monitoring.config import PerformanceRule

FALSE_ALARM_RATE = 0.03
P90_MISS_SHARE = 0.10  # the share of shipments a calibrated P90 lets run past it


@dataclass(frozen=True)
class WindowPerformance:
    """Metrics of the window's labelled predictions."""

    n_predictions: int
    n_labelled: int
    n_positives: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    n_negatives: int | None = None

    @property
    def label_coverage(self) -> float:
        return self.n_labelled / self.n_predictions if self.n_predictions else 0.0


@dataclass(frozen=True)
class PerformanceCheck:
    """The window metric beside the backtest value and the verdict of the family's rule."""

    metric: str
    status: str  # ok | breach | not_enough_labels | no_backtest | no_metric
    window_value: float | None
    backtest_value: float | None
    backtest_metric: str | None
    rule: str
    limit: float
    change: float | None  # absolute drop or relative increase, per the rule
    reason: str
    n_labelled: int = 0
    label_coverage: float = 0.0
    segment: dict[str, str] | None = None  # segment checks: the segment's column values, e.g. {in_mode: sea}

    @property
    def breached(self) -> bool:
        return self.status == "breach"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _numeric(frame: pd.DataFrame, col: str) -> np.ndarray:
    if col not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype="float64")


def _bool(frame: pd.DataFrame, col: str) -> np.ndarray:
    """Labels as 1.0 / 0.0, NaN where unknown."""
    if col not in frame.columns:
        return np.full(len(frame), np.nan)
    values = frame[col].astype("object")
    mapped = values.map(lambda v: np.nan if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA
                        else float(bool(v)) if not isinstance(v, str) else float(v.strip().lower() in ("true", "1")))
    return mapped.to_numpy(dtype="float64")


def demand_performance(joined: pd.DataFrame) -> WindowPerformance:
    """accuracy (1 - WAPE of P50), wape, bias, P10-P90 coverage on predictions whose units are known."""
    from training import metrics as m

    y, p10, p50, p90 = (_numeric(joined, c) for c in ("y_units", "out_p10", "out_p50", "out_p90"))
    ok = ~np.isnan(y) & ~np.isnan(p50)
    out: dict[str, float] = {}
    if ok.any():
        out = {"accuracy": m.accuracy(y[ok], p50[ok]), "wape": m.wape(y[ok], p50[ok]), "bias": m.bias(y[ok], p50[ok])}
        both = ok & ~np.isnan(p10) & ~np.isnan(p90)
        if both.any():
            out["coverage_p10_p90"] = m.interval_coverage(y[both], p10[both], p90[both])
    return WindowPerformance(len(joined), int(ok.sum()), None, out)


def delay_performance(joined: pd.DataFrame) -> WindowPerformance:
    """mae of P50 transit days, P90 coverage, late AUC and Brier on delivered shipments."""
    from training import metrics as m

    y, p50, p90 = (_numeric(joined, c) for c in ("y_transit_days", "out_transit_days_p50", "out_transit_days_p90"))
    ok = ~np.isnan(y) & ~np.isnan(p50)
    out: dict[str, float] = {}
    if ok.any():
        out["mae"] = float(np.mean(np.abs(y[ok] - p50[ok])))
        cov = ok & ~np.isnan(p90)
        if cov.any():
            out["p90_coverage"] = float(np.mean(y[cov] <= p90[cov]))
        late, p_late = _bool(joined, "y_late"), _numeric(joined, "out_p_late")
        lk = ok & ~np.isnan(late) & ~np.isnan(p_late)
        if lk.any():
            out["late_auc"] = m.roc_auc(late[lk], p_late[lk])
            out["late_brier"] = m.brier(late[lk], p_late[lk])
    return WindowPerformance(len(joined), int(ok.sum()), None, out)


def risk_performance(joined: pd.DataFrame, false_alarm_rate: float = FALSE_ALARM_RATE) -> WindowPerformance:
    """Fraud recall at the false-alarm rate, PR-AUC and Brier on orders whose fraud label is known.

    Orders without a known label are left out: a chargeback that has not arrived yet is not a negative.
    """
    from training import metrics as m

    y, p = _bool(joined, "y_is_fraud"), _numeric(joined, "out_p_fraud")
    ok = ~np.isnan(y) & ~np.isnan(p)
    out: dict[str, float] = {}
    n_pos = int(np.nansum(y[ok])) if ok.any() else 0
    if ok.any():
        out["recall_at_3pct_fpr"] = m.recall_at_false_alarm_rate(y[ok], p[ok], false_alarm_rate)
        out["pr_auc"] = m.pr_auc(y[ok], p[ok])
        out["brier"] = m.brier(y[ok], p[ok])
        out["fraud_rate"] = float(y[ok].mean())
    yc, pc = _bool(joined, "y_is_compliance_issue"), _numeric(joined, "out_p_compliance")
    okc = ~np.isnan(yc) & ~np.isnan(pc)
    if okc.any() and yc[okc].sum() > 0:
        out["compliance_recall_at_3pct_fpr"] = m.recall_at_false_alarm_rate(yc[okc], pc[okc], false_alarm_rate)
        out["compliance_pr_auc"] = m.pr_auc(yc[okc], pc[okc])
    return WindowPerformance(len(joined), int(ok.sum()), n_pos, out, n_negatives=int(ok.sum()) - n_pos)


def window_performance(family: str, joined: pd.DataFrame) -> WindowPerformance:
    """Performance of a family's joined predictions (see join_outcomes)."""
    return {"demand": demand_performance, "delay": delay_performance, "risk": risk_performance}[family](joined)


def pick_backtest_value(backtest: dict[str, float] | None, names: list[str]) -> tuple[str | None, float | None]:
    """The first of `names` found (finite) among the champion's backtest metrics."""
    for name in names:
        value = (backtest or {}).get(name)
        if value is not None and math.isfinite(float(value)):
            return name, float(value)
    return None, None


def served_baseline(perf: WindowPerformance, rule: PerformanceRule) -> dict[str, float] | None:
    """The metric of an earlier served period as a baseline (None when it has too few labels to count)."""
    enough = perf.n_labelled >= rule.min_labels and (perf.n_positives is None or perf.n_positives >= rule.min_positives)
    value = perf.metrics.get(rule.metric)
    if not enough or value is None or not math.isfinite(value):
        return None
    return {f"served:{rule.metric}": value}


def compare_with_backtest(perf: WindowPerformance, backtest: dict[str, float] | None,
                          rule: PerformanceRule) -> PerformanceCheck:
    """Judge the window's metric against the baseline (backtest, or served period) with the family's rule."""
    if rule.baseline == "served":
        rule = rule.model_copy(update={"backtest_metrics": [f"served:{rule.metric}"]})
    base = dict(metric=rule.metric, rule=rule.rule, limit=rule.limit, n_labelled=perf.n_labelled,
                label_coverage=round(perf.label_coverage, 4))
    window_value = perf.metrics.get(rule.metric)
    bt_name, bt_value = pick_backtest_value(backtest, rule.backtest_metrics)
    few_pos = perf.n_positives is not None and perf.n_positives < rule.min_positives
    few_neg = perf.n_negatives is not None and perf.n_negatives < rule.min_negatives
    if perf.n_labelled < rule.min_labels or few_pos or few_neg:
        pos = "" if perf.n_positives is None else (f", {perf.n_positives} positive(s) (need {rule.min_positives}), "
                                                   f"{perf.n_negatives} negative(s) (need {rule.min_negatives})")
        return PerformanceCheck(status="not_enough_labels", window_value=window_value, backtest_value=bt_value,
                                backtest_metric=bt_name, change=None,
                                reason=f"{perf.n_labelled} labelled prediction(s) (need {rule.min_labels}){pos}",
                                **base)
    if window_value is None or not math.isfinite(window_value):
        return PerformanceCheck(status="no_metric", window_value=None, backtest_value=bt_value,
                                backtest_metric=bt_name, change=None,
                                reason=f"{rule.metric} could not be computed on the window", **base)
    if bt_value is None:
        return PerformanceCheck(status="no_backtest", window_value=window_value, backtest_value=None,
                                backtest_metric=None, change=None,
                                reason=f"no baseline: none of {rule.backtest_metrics} is available", **base)
    if rule.rule == "absolute_drop":
        change = bt_value - window_value
        breached = change > rule.limit
        words = f"{rule.metric} {window_value:.3f} vs {bt_name} {bt_value:.3f}: down {change * 100:.1f} points " \
                f"(limit {rule.limit * 100:.0f})"
    else:
        change = (window_value - bt_value) / bt_value if bt_value else math.inf
        breached = change > rule.limit
        words = f"{rule.metric} {window_value:.3f} vs {bt_name} {bt_value:.3f}: {change:+.1%} (limit +{rule.limit:.0%})"
    return PerformanceCheck(status="breach" if breached else "ok", window_value=window_value, backtest_value=bt_value,
                            backtest_metric=bt_name, change=change, reason=words, **base)


def add_segment_columns(joined: pd.DataFrame) -> pd.DataFrame:
    """Derived segment columns: `region` of the destination market (in_destination_market or in_market in the
    prediction log; destination_market or market in a training frame)."""
    from features.schema import MARKET_REGION

    out = joined
    for col in ("in_destination_market", "in_market", "destination_market", "market"):
        if col in joined.columns:
            out = joined.assign(region=joined[col].map(MARKET_REGION))
            break
    return out


def absolute_errors(family: str, joined: pd.DataFrame) -> np.ndarray:
    """Per labelled prediction, the absolute error of the point forecast (delay: P50 transit days)."""
    if family == "delay":
        y, f = _numeric(joined, "y_transit_days"), _numeric(joined, "out_transit_days_p50")
    elif family == "demand":
        y, f = _numeric(joined, "y_units"), _numeric(joined, "out_p50")
    else:
        raise ValueError(f"segment checks judge point-forecast errors; '{family}' has none")
    err = np.abs(y - f)
    return err[~np.isnan(err)]


def label_arrival_times(family: str, joined: pd.DataFrame) -> pd.Series:
    """When each joined prediction's outcome became known (NaT when unlabelled).

    delay: delivered_at (else event time + transit days); demand: the day after the forecast date (sales are
    reported the next day). Risk negatives are confirmed only when their chargeback window closes, so risk has no
    arrival time to window on.
    """
    labelled = joined["labelled"].astype(bool) if "labelled" in joined.columns else pd.Series(False, index=joined.index)
    if family == "delay":
        arrived = pd.to_datetime(joined.get("y_delivered_at"), errors="coerce") if "y_delivered_at" in joined.columns \
            else pd.Series(pd.NaT, index=joined.index)
        if "event_time" in joined.columns:
            derived = pd.to_datetime(joined["event_time"]) + pd.to_timedelta(_numeric(joined, "y_transit_days"), unit="D")
            arrived = arrived.fillna(derived)
    elif family == "demand":
        col = "date" if "date" in joined.columns else "y_date"
        arrived = pd.to_datetime(joined[col], errors="coerce") + pd.Timedelta(days=1)
    else:
        raise ValueError(f"label-arrival windows need an arrival time per label; '{family}' negatives have none")
    return arrived.where(labelled)


def select_arrived(family: str, joined: pd.DataFrame, start, end) -> pd.DataFrame:
    """The labelled predictions whose outcome arrived in [start, end), whatever their prediction time.

    At a steady state the outcomes arriving in a stretch are an unbiased sample of all outcomes (an event-time
    window with immature labels holds only the fast ones), and a change shows as soon as its first labels arrive.
    """
    arrived = label_arrival_times(family, joined)
    keep = (arrived >= pd.Timestamp(start)) & (arrived < pd.Timestamp(end))
    return joined.loc[keep.fillna(False).to_numpy()].reset_index(drop=True)


def _segment_values(cols: list[str], key) -> dict[str, str]:
    """A groupby key as {column: value}."""
    return {c: str(v) for c, v in zip(cols, key if isinstance(key, tuple) else (key,))}


def _segment_pairs(judged: pd.DataFrame, earlier: pd.DataFrame, cols: list[str],
                   values: Callable[[pd.DataFrame], np.ndarray], min_now: int,
                   min_before: int) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    """(segment, values now, values before) for each segment of `cols` in both periods with at least `min_now` /
    `min_before` values; [] when a segment column is missing. The segment checks' shared grouping."""
    judged, earlier = add_segment_columns(judged), add_segment_columns(earlier)
    if not cols or any(c not in judged.columns or c not in earlier.columns for c in cols):
        return []
    before = {key: values(part) for key, part in earlier.groupby(cols, dropna=True, observed=True)}
    pairs = []
    for key, part in judged.groupby(cols, dropna=True, observed=True):
        if key in before:
            now = values(part)
            if len(now) >= min_now and len(before[key]) >= min_before:
                pairs.append((_segment_values(cols, key), now, before[key]))
    return pairs


def segment_checks(family: str, judged: pd.DataFrame, earlier: pd.DataFrame, rule: PerformanceRule,
                   min_judged: int | None = None, alpha: float | None = None) -> list[PerformanceCheck]:
    """Each segment's mean absolute error on the judged period against the same segment served before.

    A shift confined to a few lanes (sea freight to Europe is ~2% of shipments) moves the overall MAE by less
    than its limit; per segment it stands out. A segment breaches when its error rises by more than
    `segment_limit` (and by `segment_min_change`) and a one-sided Mann-Whitney U test on the absolute errors gives
    p < `segment_alpha` (rank-based: absolute errors are skewed and a label-arrival window may hold a handful of
    rows, where a t-test alarms on one outlier), Bonferroni-corrected for the number of segments judged (many
    segments, many chances). Segments with fewer than `min_segment_labels` labelled predictions in the earlier
    period, or `min_judged` (default the same) in the judged one, are not judged. `alpha` (default
    `segment_alpha`) is this check's share of the run's false-alarm budget.
    """
    from scipy import stats

    min_judged = rule.min_segment_labels if min_judged is None else min_judged
    pairs = [(segment, now, base) for segment, now, base in
             _segment_pairs(judged, earlier, list(rule.segment_by), lambda part: absolute_errors(family, part),
                            min_judged, rule.min_segment_labels) if base.mean() > 0]
    per_test = (rule.segment_alpha if alpha is None else alpha) / max(len(pairs), 1)
    checks = []
    for segment, now, base in pairs:
        change = (now.mean() - base.mean()) / base.mean()
        p_value = float(stats.mannwhitneyu(now, base, alternative="greater").pvalue)
        breached = bool(change > rule.segment_limit and p_value < per_test
                        and now.mean() - base.mean() >= rule.segment_min_change)
        name = "/".join(segment.values())
        checks.append(PerformanceCheck(
            metric=f"mae[{name}]", status="breach" if breached else "ok", window_value=float(now.mean()),
            backtest_value=float(base.mean()), backtest_metric=f"served:mae[{name}]", rule="relative_increase",
            limit=rule.segment_limit, change=float(change), n_labelled=len(now), label_coverage=1.0,
            segment=segment,
            reason=f"segment {name}: MAE {now.mean():.2f} vs {base.mean():.2f} served before ({change:+.0%}, "
                   f"p={p_value:.2g}, n={len(now)}/{len(base)}; limit +{rule.segment_limit:.0%} and "
                   f"+{rule.segment_min_change:g}, alpha {per_test * len(pairs):.2g}/{len(pairs)} segments)"))
    return checks


def p90_deadlines(joined: pd.DataFrame) -> pd.Series:
    """When each delay prediction's P90 runs out: the shipment's created time + its P90 transit days."""
    return pd.to_datetime(joined["event_time"]) + pd.to_timedelta(_numeric(joined, "out_transit_days_p90"), unit="D")


def standardised_lateness(joined: pd.DataFrame, as_of) -> np.ndarray:
    """Per delay prediction, (transit days - P50) / (P90 - P50): 0 at its P50, 1 at its P90, 2 one P50-to-P90
    spread past it. A shipment not delivered by `as_of` counts with the days elapsed by then (a lower bound, so a
    test on it errs towards no alarm). The spread puts lanes of any length on one scale: a day late on an express
    lane whose P90 is half a day past its P50 is as late as four days on a sea lane whose P90 is four days past."""
    p50, p90 = _numeric(joined, "out_transit_days_p50"), _numeric(joined, "out_transit_days_p90")
    elapsed = (pd.Timestamp(as_of) - pd.to_datetime(joined["event_time"])).dt.total_seconds().to_numpy() / 86400.0
    transit = _numeric(joined, "y_transit_days")
    labelled = joined["labelled"].astype(bool).to_numpy() if "labelled" in joined.columns else ~np.isnan(transit)
    days = np.where(labelled & ~np.isnan(transit), transit, elapsed)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (days - p50) / np.maximum(p90 - p50, 1e-9)


def select_due(joined: pd.DataFrame, start, end, as_of=None) -> pd.DataFrame:
    """The delay predictions whose P90 deadline fell in [start, end), with `overdue`: not delivered by then.

    Joined with labels as of a moment after `end`, a shipment without a delivery is past its deadline, so it is
    known to miss its P90 although its transit time is not known yet. This is the earliest label a lane
    disruption gives: the first diverted shipments show as overdue days before the first of them arrives. With
    `as_of` (the moment the labels are known at), also `lateness` (see standardised_lateness).
    """
    deadline = p90_deadlines(joined)
    keep = ((deadline >= pd.Timestamp(start)) & (deadline < pd.Timestamp(end))).fillna(False).to_numpy()
    due = joined.loc[keep].reset_index(drop=True)
    labelled = due["labelled"].astype(bool).to_numpy() if "labelled" in due.columns else np.zeros(len(due), bool)
    within = _numeric(due, "y_transit_days") <= _numeric(due, "out_transit_days_p90")
    due = due.assign(overdue=~(labelled & within))
    return due if as_of is None else due.assign(lateness=standardised_lateness(due, as_of))


def lateness_threshold(reference: np.ndarray, quantile: float) -> float | None:
    """The conformal `quantile` of the reference's standardised lateness, floored at 1 (the P90): its
    ceil((m + 1) q)-th smallest of m values, which a new shipment exchangeable with them exceeds with probability
    at most 1 - q. None when the reference has too few values for that rank (m < q / (1 - q))."""
    values = np.sort(reference[np.isfinite(reference)])
    rank = math.ceil((len(values) + 1) * quantile)
    if rank > len(values):
        return None
    return max(1.0, float(values[rank - 1]))


def overdue_checks(judged: pd.DataFrame, earlier: pd.DataFrame, rule: PerformanceRule,
                   alpha: float | None = None) -> list[PerformanceCheck]:
    """Each segment's share of due shipments (see select_due) that ran late beyond the calm tail, against the same
    segment's share before.

    With `lateness` in both frames (select_due with as_of), for each q of `overdue_quantiles` a shipment counts
    when its standardised lateness exceeds the q-quantile of the earlier period's (all segments pooled, conformal
    rank, never below the P90), and the null share is 1 - q. A diverted shipment ends up days past its P90 while
    calm misses are mostly just past it, so counting only the far misses (q 0.95) lowers the null share and a
    handful of them among shipments still on time is evidence; counting every miss (q 0.9, the P90) catches a window
    of shipments all just past it. Without `lateness` a shipment counts when it is past its P90 (null share 10%).
    A segment breaches when, for some q, at least `overdue_min_share` of its due shipments count and a one-sided
    exact binomial test gives p < alpha / (segments judged x quantiles). The null share is the larger of the
    nominal one and the segment's own earlier share, so a segment whose P90 was already too short does not alarm.
    (A Fisher test against the earlier counts has too little power: a segment sees a few dozen due shipments a
    month.) Segments need `min_segment_window_labels` due shipments now and `min_segment_labels` before.
    """
    from scipy import stats

    counts = []  # (flags now, flags before, nominal null share, what counts)
    if "lateness" in judged.columns and "lateness" in earlier.columns:
        now_late = judged["lateness"].to_numpy(dtype="float64")
        before_late = earlier["lateness"].to_numpy(dtype="float64")
        for q in rule.overdue_quantiles:
            threshold = lateness_threshold(before_late, q)
            if threshold is not None:
                counts.append((now_late > threshold, before_late > threshold, 1.0 - q,
                               f"ran later than {q:.0%} of all shipments due before (lateness > {threshold:.2f} "
                               f"P50-to-P90 spreads past P50, undelivered ones as of now)"))
    if not counts:
        counts = [(judged["overdue"].to_numpy(bool), earlier["overdue"].to_numpy(bool), P90_MISS_SHARE,
                   "are past their P90 undelivered or arrived after it")]
    flags = [f"_count{i}" for i in range(len(counts))]
    judged = judged.assign(**{f: c[0] for f, c in zip(flags, counts)})
    earlier = earlier.assign(**{f: c[1] for f, c in zip(flags, counts)})
    pairs = _segment_pairs(judged, earlier, list(rule.segment_by), lambda part: part[flags].to_numpy(bool),
                           rule.min_segment_window_labels, rule.min_segment_labels)
    per_test = (rule.segment_alpha if alpha is None else alpha) / max(len(pairs), 1) / len(counts)
    checks = []
    for segment, now, base in pairs:
        tests = []
        for i, (_, _, nominal, what) in enumerate(counts):
            k1, n1, k0, n0 = int(now[:, i].sum()), len(now), int(base[:, i].sum()), len(base)
            null_share = max(nominal, k0 / n0)
            p_value = float(stats.binomtest(k1, n1, null_share, alternative="greater").pvalue)
            breached = bool(k1 / n1 >= rule.overdue_min_share and p_value < per_test)
            tests.append((not breached, p_value, k1, n1, k0, n0, null_share, what, breached))
        _, p_value, k1, n1, k0, n0, null_share, what, breached = min(tests)  # a breach first, then the smallest p
        share, base_share = k1 / n1, k0 / n0
        name = "/".join(segment.values())
        checks.append(PerformanceCheck(
            metric=f"overdue_share[{name}]", status="breach" if breached else "ok", window_value=share,
            backtest_value=base_share, backtest_metric=f"served:overdue_share[{name}]", rule="absolute_rise",
            limit=rule.overdue_min_share, change=share - base_share, n_labelled=n1, label_coverage=1.0,
            segment=segment,
            reason=f"segment {name}: {k1} of {n1} shipments due in the window {what}, vs {k0} of {n0} before "
                   f"({share:.0%} vs {base_share:.0%}, p={p_value:.2g} against {null_share:.0%}; "
                   f"limit {rule.overdue_min_share:.0%}, alpha {per_test * len(pairs) * len(counts):.2g}/"
                   f"{len(pairs)} segments x {len(counts)} count(s))"))
    return checks
