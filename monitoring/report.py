"""Report writers: the Evidently HTML a person reads, the JSON summary a machine reads, the terminal summary.

Files go to `$TRADECAST_HOME/reports/<family>_<start>_<end>.{html,json}` (UTC, YYYYMMDDTHHMM). The HTML opens
with a short verdict (severity, reasons, drifted features) followed by Evidently's per-column drift widgets,
drifted features first, then the predictions, then the full drift table.
"""

from __future__ import annotations

import html
import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from monitoring.config import FamilyMonitorConfig
from monitoring.drift import DriftResult, column_method, evidently_frames, value_drift_metrics
from tradecast.paths import ensure_dir, reports_dir

if TYPE_CHECKING:  # pragma: no cover
    from monitoring.monitor import MonitorResult

SEVERITY_STYLE = {"red": "bold red", "orange": "bold dark_orange", "yellow": "bold yellow", None: "bold green"}


def report_stem(family: str, start: datetime, end: datetime) -> str:
    return f"{family}_{start:%Y%m%dT%H%M}_{end:%Y%m%dT%H%M}"


def report_paths(family: str, start: datetime, end: datetime) -> tuple[Path, Path]:
    stem = report_stem(family, start, end)
    folder = reports_dir()
    return folder / f"{stem}.html", folder / f"{stem}.json"


def build_drift_snapshot(reference: pd.DataFrame, current: pd.DataFrame, drift: DriftResult,
                         settings: FamilyMonitorConfig):
    """An Evidently snapshot ordered for reading: drifted features, predictions, then the full drift table."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    kinds = {c.column: c.kind for c in drift.features + drift.predictions}
    order = [c.column for c in drift.ordered_columns()]
    feature_cols = [c.column for c in drift.features]
    tested = {c.column: c.threshold for c in drift.features + drift.predictions}  # noise floors included
    metrics: list[Any] = value_drift_metrics(kinds, settings, current, order=order[: len(drift.drifted_features())]
                                             + [c.column for c in drift.predictions], floors=tested)
    if feature_cols:
        per_method = {c: m for c in feature_cols if (m := column_method(c, kinds[c], settings)[0]) is not None}
        per_threshold = {c.column: c.threshold for c in drift.features}
        metrics.append(DataDriftPreset(columns=feature_cols, drift_share=settings.drift_share,
                                       per_column_method=per_method or None, per_column_threshold=per_threshold))
    ref_ds, cur_ds = evidently_frames(reference, current, kinds)
    return Report(metrics, include_tests=True).run(cur_ds, ref_ds)


def verdict_html(summary: dict[str, Any]) -> str:
    """The block put at the top of the HTML report: verdict, reasons, drifted features, performance."""
    alert = summary.get("alert") or {}
    severity = alert.get("severity")
    colour = {"red": "#c62828", "orange": "#ef6c00", "yellow": "#f9a825"}.get(severity, "#2e7d32")
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(f['column'])}</td><td>{esc(f['method'])}</td><td>{f['score']:.4g}</td>"
        f"<td>{f['threshold']:.4g}</td></tr>"
        for f in (summary.get("drift") or {}).get("features", []) if f["drifted"])
    reasons = "".join(f"<li>[{esc(r['severity'])}] {esc(r['message'])}</li>" for r in alert.get("reasons", []))
    perf = summary.get("performance") or {}
    perf_line = esc(perf.get("reason", "no outcomes yet")) if perf else "no outcomes yet"
    return (
        f'<div style="font-family:sans-serif;margin:16px;padding:12px;border-left:8px solid {colour}">'
        f"<h2>tradecast monitor: {esc(summary['family'])} &mdash; "
        f"{esc(severity.upper() if severity else 'NO ALERT')}</h2>"
        f"<p>window {esc(summary['window']['start'])} to {esc(summary['window']['end'])} "
        f"({summary['window']['rows']} predictions); reference: {esc(summary['reference']['source'])} "
        f"({summary['reference']['rows']} rows)</p>"
        + (f"<ul>{reasons}</ul>" if reasons else "<p>No threshold breached.</p>")
        + (f"<h3>Drifted features</h3><table border=1 cellpadding=4><tr><th>column</th><th>test</th>"
           f"<th>score</th><th>threshold</th></tr>{rows}</table>" if rows else "<p>No drifted features.</p>")
        + f"<p>Performance: {perf_line}</p></div>"
    )


def write_html(path: Path, summary: dict[str, Any], snapshot=None) -> Path:
    """Write the Evidently report with the verdict block on top (verdict only when there is no snapshot)."""
    ensure_dir(path.parent)
    block = verdict_html(summary)
    if snapshot is None:
        path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(path.stem)}</title>"
                        f"</head><body>{block}</body></html>", encoding="utf-8")
        return path
    page = snapshot.get_html_str(as_iframe=False)
    marker = page.find("<body")
    if marker >= 0:
        end = page.find(">", marker) + 1
        page = page[:end] + block + page[end:]
    else:  # pragma: no cover - Evidently always writes a body
        page = block + page
    path.write_text(page, encoding="utf-8")
    return path


def write_json(path: Path, summary: dict[str, Any]) -> Path:
    ensure_dir(path.parent)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def evidently_metrics(snapshot) -> list[dict[str, Any]]:
    """Compact view of the Evidently snapshot for the JSON summary: metric name and value."""
    if snapshot is None:
        return []
    return [{"metric": m["metric_name"], "value": m["value"]} for m in snapshot.dict()["metrics"]]


def print_summary(results: list["MonitorResult"], console=None) -> None:
    """One screen: a row per family with the verdict, then window, reference, reasons and report paths."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    table = Table(title="tradecast monitor")
    for col in ("family", "rows", "drifted features", "outputs", "performance", "alert"):
        table.add_column(col, overflow="fold")
    for r in results:
        s = r.summary
        drift = s.get("drift")
        if drift:
            drifted = f"{drift['n_drifted_features']}/{drift['n_features']} ({drift['share_drifted_features']:.0%})"
            preds = "drifted" if drift["prediction_drift"] else "stable"
        else:
            drifted, preds = "not tested", "-"
        perf = s.get("performance") or {}
        if perf.get("window_value") is not None and perf.get("backtest_value") is not None:
            perf_text = f"{perf['metric']} {perf['window_value']:.3f} (backtest {perf['backtest_value']:.3f})"
        else:
            perf_text = perf.get("status", "no outcomes").replace("_", " ") if perf else "no outcomes"
        severity = (s.get("alert") or {}).get("severity")
        table.add_row(s["family"], str(s["window"]["rows"]), drifted, preds, perf_text,
                      f"[{SEVERITY_STYLE[severity]}]{severity.upper() if severity else 'ok'}[/]")
    console.print(table)
    for r in results:
        s = r.summary
        fam = r.family
        console.print(f"[bold]{fam}[/]: window {s['window']['start'][:16]} .. {s['window']['end'][:16]} UTC; "
                      f"reference {escape(s['reference']['source'])} ({s['reference']['rows']} rows)",
                      highlight=False)
        if s.get("drift_note"):
            console.print(f"  drift {escape(s['drift_note'])}", highlight=False)
        if s.get("drift") and s["drift"]["drifted_features"]:
            console.print(f"  drifted: {escape(', '.join(s['drift']['drifted_features'][:6]))}", highlight=False)
        for reason in (s.get("alert") or {}).get("reasons", []):
            console.print(f"  [{SEVERITY_STYLE[reason['severity']]}]{reason['severity']}[/]: "
                          f"{escape(reason['message'])}", highlight=False)
        webhook = s.get("webhook")
        if webhook and not webhook.get("ok"):
            console.print(f"  [yellow]webhook {escape(webhook['url'])} failed: {escape(str(webhook['error']))}[/]",
                          highlight=False)
        console.print(f"  report: {s['report']['html']}", highlight=False, soft_wrap=True)
