"""Thresholds -> an alert with a severity and its reasons; the alert record file and the webhook.

Severity of a family's monitor run (the highest of its reasons):
- red:    performance breach against the training backtest (labels known);
- orange: input drift (share of drifted features >= drift_share);
- yellow: prediction drift alone.
Every alert is appended to `$TRADECAST_HOME/reports/alerts.jsonl` and POSTed to the webhook when one is
configured; a webhook failure is reported in the result, never raised.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from monitoring.config import severity_rank
from monitoring.drift import DriftResult
from monitoring.performance import PerformanceCheck
from tradecast.paths import ensure_dir, reports_dir


@dataclass(frozen=True)
class AlertReason:
    severity: str
    kind: str  # performance | segment_performance | input_drift | prediction_drift
    message: str
    segment: dict[str, str] | None = None  # segment_performance: the segment's column values (for the retrain gate)


@dataclass(frozen=True)
class WebhookResult:
    url: str
    ok: bool
    status_code: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Alert:
    """One family's alert for one window."""

    family: str
    severity: str
    reasons: tuple[AlertReason, ...]
    window_start: str
    window_end: str
    alert_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    report_html: str | None = None
    summary_json: str | None = None

    def record(self) -> dict[str, Any]:
        """The JSON record written to alerts.jsonl and posted to the webhook."""
        out = asdict(self)
        out["reasons"] = [asdict(r) for r in self.reasons]
        out["summary"] = "; ".join(f"[{r.severity}] {r.message}" for r in self.reasons)
        return out


def alert_reasons(drift: DriftResult | None, performance: PerformanceCheck | None,
                  segments: list[PerformanceCheck] | None = None) -> list[AlertReason]:
    """Every threshold breached, each with its severity (pure)."""
    reasons: list[AlertReason] = []
    if performance is not None and performance.breached:
        reasons.append(AlertReason("red", "performance", performance.reason))
    # worst breached segment first: it is named at the head of the alert's summary
    for seg in sorted((s for s in segments or [] if s.breached), key=lambda s: -(s.change or 0.0)):
        reasons.append(AlertReason("red", "segment_performance", seg.reason, seg.segment))
    if drift is not None and drift.dataset_drift:
        top = ", ".join(c.column for c in drift.drifted_features()[:5])
        reasons.append(AlertReason("orange", "input_drift",
                                   f"{drift.n_drifted}/{drift.n_features} features drifted "
                                   f"({drift.share_drifted:.0%} >= {drift.drift_share_threshold:.0%}): {top}"))
    if drift is not None and drift.prediction_drift:
        cols = ", ".join(f"{c.column} ({c.method} {c.score:.3g} vs {c.threshold:.3g})"
                         for c in drift.predictions if c.drifted)
        reasons.append(AlertReason("yellow", "prediction_drift", f"predictions drifted: {cols}"))
    return sorted(reasons, key=lambda r: -severity_rank(r.severity))


def build_alert(family: str, reasons: list[AlertReason], window_start: datetime, window_end: datetime) -> Alert | None:
    """An Alert at the highest severity among `reasons`, or None when nothing was breached."""
    if not reasons:
        return None
    severity = max((r.severity for r in reasons), key=severity_rank)
    return Alert(family=family, severity=severity, reasons=tuple(reasons),
                 window_start=window_start.isoformat(), window_end=window_end.isoformat())


def alerts_path() -> Path:
    return reports_dir() / "alerts.jsonl"


def append_alert(alert: Alert, path: Path | None = None) -> Path:
    """Append the alert record as one JSON line."""
    path = path or alerts_path()
    ensure_dir(path.parent)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(alert.record(), default=str) + "\n")
    return path


def read_alerts(path: Path | None = None) -> list[dict[str, Any]]:
    """Every alert record written so far (oldest first)."""
    path = path or alerts_path()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def post_webhook(url: str, alert: Alert, timeout_seconds: float) -> WebhookResult:
    """POST the alert record as JSON; any failure (refused, timeout, non-2xx) is returned, not raised."""
    import httpx

    try:
        response = httpx.post(url, json=alert.record(), timeout=timeout_seconds)
    except httpx.HTTPError as exc:
        return WebhookResult(url=url, ok=False, error=f"{type(exc).__name__}: {exc}")
    ok = 200 <= response.status_code < 300
    return WebhookResult(url=url, ok=ok, status_code=response.status_code,
                         error=None if ok else f"HTTP {response.status_code}")
