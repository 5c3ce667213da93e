"""One monitor run of one family: read the window, load the reference, test drift, judge performance,
write the reports, raise the alert. The CLI (`tradecast monitor`) and the retrain loop call `run_monitor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from monitoring.alerts import Alert, WebhookResult, alert_reasons, append_alert, build_alert, post_webhook
from monitoring.config import MonitoringConfig, parse_window, severity_rank
from monitoring.drift import DriftResult, compute_drift
from monitoring.outcomes import join_outcomes, load_outcomes
from monitoring.performance import (PerformanceCheck, compare_with_backtest, overdue_checks, segment_checks,
                                    select_arrived, select_due, served_baseline, window_performance)
from monitoring.predlog import read_prediction_log
from monitoring.reference import champion_info, describe, load_reference
from monitoring.report import build_drift_snapshot, evidently_metrics, report_paths, write_html, write_json


@dataclass(frozen=True)
class MonitorResult:
    family: str
    drift: DriftResult | None
    performance: PerformanceCheck | None
    alert: Alert | None
    summary: dict[str, Any]
    html_path: Path
    json_path: Path

    @property
    def severity(self) -> str | None:
        return self.alert.severity if self.alert else None


def utc_now() -> datetime:
    """Now as a naive UTC datetime (the log's time base)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def parse_until(text: str | None) -> datetime:
    """--until: an ISO date or datetime (UTC); default now."""
    from tradecast.errors import TradecastError

    if not text:
        return utc_now()
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise TradecastError(f"--until: '{text}' is not an ISO date or datetime (e.g. 2026-11-22 or "
                             f"2026-11-22T06:00)") from None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def run_monitor(family: str, cfg: MonitoringConfig, until: datetime | None = None, window: str | None = None,
                reference_path: Path | None = None, time_column: str = "logged_at",
                webhook_url: str | None = None, send_webhook: bool = True, write: bool = True) -> MonitorResult:
    """Monitor `family` over [until - window, until): drift vs reference, performance vs backtest, alert."""
    fam = cfg.family(family)
    until = until or utc_now()
    start = until - parse_window(window or cfg.window)
    perf_start = until - parse_window(fam.performance_window) if fam.performance_window else start
    served = fam.performance.baseline == "served"
    base_start = perf_start - timedelta(days=cfg.reference_days)
    rule = fam.performance
    seg_start = until - parse_window(rule.segment_window) if rule.segment_window else None
    seg_base_start = seg_start - timedelta(days=cfg.reference_days) if seg_start else None
    read_from = min(start, base_start if served else perf_start)
    if seg_base_start is not None:  # predictions whose labels may arrive in the segments' baseline or window
        read_from = min(read_from, seg_base_start - parse_window(rule.label_max_age))
    log = read_prediction_log(family, read_from, until, time_column)
    current = log.frame.loc[log.frame[time_column] >= start].reset_index(drop=True) if len(log.frame) else log.frame
    perf_end = until - parse_window(fam.performance_min_age) if fam.performance_min_age else until
    judged = log.frame.loc[(log.frame[time_column] >= perf_start) & (log.frame[time_column] < perf_end)] \
        .reset_index(drop=True) if len(log.frame) else log.frame
    champion = champion_info(family)
    reference = load_reference(family, start, cfg, reference_path, time_column, champion)

    drift, drift_note, snapshot = None, None, None
    if len(current) < cfg.min_rows:
        drift_note = f"not enough data: {len(current)} prediction(s) in the window (need {cfg.min_rows})"
    elif reference.empty:
        drift_note = f"no reference: {reference.source}"
    else:
        drift = compute_drift(reference.frame, current, fam, time_column=time_column, block=until - start)

    performance, segments = None, []
    if len(judged):
        outcomes = load_outcomes(family)
        judged_joined = join_outcomes(judged, outcomes, family, as_of=until)
        perf = window_performance(family, judged_joined)
        if served:  # the same metric on the period served just before, labels known as of the same moment
            earlier = log.frame.loc[(log.frame[time_column] >= base_start) & (log.frame[time_column] < perf_start)]
            earlier_joined = join_outcomes(earlier.reset_index(drop=True), outcomes, family, as_of=until)
            baseline = served_baseline(window_performance(family, earlier_joined), fam.performance) \
                if len(earlier) else None
            if len(earlier) and seg_start is None and fam.performance.segment_error_check:
                segments = segment_checks(family, judged_joined, earlier_joined, fam.performance)
            if baseline is None and champion is not None:  # no earlier served period yet: the backtest
                baseline = {**champion.metrics}
                for name in fam.performance.backtest_metrics:
                    if name in baseline:
                        baseline[f"served:{fam.performance.metric}"] = baseline[name]
                        baseline["baseline_fallback"] = 1.0
                        break
        else:
            baseline = champion.metrics if champion else None
        performance = compare_with_backtest(perf, baseline, fam.performance)
    if seg_start is not None and rule.segment_by and len(log.frame):
        # segments on label arrival: the outcomes that came in during the last segment_window, against the
        # same segment's outcomes that came in during the reference_days before (labels known at `until`)
        everything = join_outcomes(log.frame.reset_index(drop=True), load_outcomes(family), family, as_of=until)
        # with both checks on, each gets half the run's false-alarm budget (union bound)
        alpha = rule.segment_alpha / 2 if rule.overdue_check and rule.segment_error_check else rule.segment_alpha
        segments = []
        if rule.segment_error_check:
            segments = segment_checks(family, select_arrived(family, everything, seg_start, until),
                                      select_arrived(family, everything, seg_base_start, seg_start), rule,
                                      min_judged=rule.min_segment_window_labels, alpha=alpha)
        if rule.overdue_check:  # deadlines that passed at least overdue_grace ago, so a late report is not overdue
            grace = parse_window(rule.overdue_grace)
            segments += overdue_checks(select_due(everything, seg_start - grace, until - grace, as_of=until),
                                       select_due(everything, seg_base_start - grace, seg_start - grace,
                                                  as_of=until), rule, alpha=alpha)

    alert = build_alert(family, alert_reasons(drift, performance, segments), start, until)
    html_path, json_path = report_paths(family, start, until)
    if alert is not None:
        alert = Alert(**{**alert.__dict__, "report_html": str(html_path), "summary_json": str(json_path)})
    summary: dict[str, Any] = {
        "family": family,
        "window": {"start": start.isoformat(), "end": until.isoformat(), "time_column": time_column,
                   "performance_start": perf_start.isoformat(), "performance_end": perf_end.isoformat(),
                   "performance_rows": len(judged),
                   "segment_arrivals": None if seg_start is None else
                   {"start": seg_start.isoformat(), "end": until.isoformat(),
                    "baseline_start": seg_base_start.isoformat()},
                   "rows": len(current), "files": [str(p) for p in log.files], "bad_lines": log.bad_lines},
        "reference": {"source": reference.source, "rows": 0 if reference.empty else len(reference.frame)},
        "champion": describe(champion),
        "drift": drift.to_dict() if drift else None,
        "drift_note": drift_note,
        "performance": performance.to_dict() if performance else None,
        "segments": [c.to_dict() for c in segments],
        "alert": alert.record() if alert else None,
        "report": {"html": str(html_path), "json": str(json_path)},
        "model_versions": sorted(current["model_version"].dropna().astype(str).unique().tolist())
        if "model_version" in current.columns else [],
    }
    if write:
        if drift is not None and (drift.features or drift.predictions):
            snapshot = build_drift_snapshot(reference.frame, current, drift, fam)
        summary["evidently"] = evidently_metrics(snapshot)
        if alert is not None:
            append_alert(alert)
            url = webhook_url or cfg.webhook.url
            if url and send_webhook:
                result: WebhookResult = post_webhook(url, alert, cfg.webhook.timeout_seconds)
                summary["webhook"] = result.__dict__
        write_html(html_path, summary, snapshot)
        write_json(json_path, summary)
    return MonitorResult(family, drift, performance, alert, summary, html_path, json_path)


def exit_code(results: list[MonitorResult], exit_severity: str) -> int:
    """1 when any family raised an alert at or above `exit_severity`, else 0."""
    worst = max((severity_rank(r.severity) for r in results), default=0)
    return 1 if worst and worst >= severity_rank(exit_severity) else 0
