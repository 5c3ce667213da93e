"""CLI of the monitoring stage: `tradecast monitor`, `tradecast retrain`, `tradecast outcomes ingest`.

Exit status of `monitor`: 0 no alert at or above `exit_severity` (configs/monitoring.yaml, default yellow),
1 an alert was raised (record in reports/alerts.jsonl, webhook posted if configured), 2 an error (bad option,
bad config, unreadable file). `retrain` exits 0 when every requested step ran (promoted or not), 2 when a
training run failed (its champion untouched) or on errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

FAMILY_HELP = "Model family: demand, delay, risk or all."

outcomes_app = typer.Typer(help="Delayed outcomes (sales, deliveries, chargebacks) joined to logged predictions.",
                           no_args_is_help=True)


def _families(family: str) -> list[str]:
    from monitoring.config import FAMILIES
    from tradecast.errors import TradecastError

    if family == "all":
        return list(FAMILIES)
    if family not in FAMILIES:
        raise TradecastError(f"--family '{family}': choose one of {', '.join(FAMILIES)} or all")
    return [family]


def monitor_command(
    family: str = typer.Option("all", help=FAMILY_HELP),
    window: Optional[str] = typer.Option(None, help="Window length before --until, e.g. 7d or 36h "
                                                    "(default from configs/monitoring.yaml)."),
    until: Optional[str] = typer.Option(None, help="End of the window, ISO date/time in UTC (default now)."),
    reference: Optional[Path] = typer.Option(None, help="Reference file (Parquet/CSV) instead of the champion's "
                                                        "training sample; needs a single --family."),
    time_column: str = typer.Option("logged_at", help="Window on logged_at (when served) or event_time."),
    webhook: Optional[str] = typer.Option(None, help="Webhook URL for alerts (overrides the config)."),
    no_webhook: bool = typer.Option(False, "--no-webhook", help="Do not post alerts to the webhook."),
    config: Optional[Path] = typer.Option(None, help="Monitoring config (default configs/monitoring.yaml)."),
) -> None:
    """Drift and performance of the served models over a window; exit 1 on an alert."""
    from tradecast.cli import run_guarded

    def _run() -> int:
        from monitoring.config import load_monitoring_config
        from monitoring.monitor import exit_code, parse_until, run_monitor
        from monitoring.report import print_summary
        from tradecast.errors import TradecastError

        cfg = load_monitoring_config(config)
        families = _families(family)
        if reference is not None and len(families) != 1:
            raise TradecastError("--reference needs a single --family")
        end = parse_until(until)
        results = [run_monitor(f, cfg, until=end, window=window, reference_path=reference,
                               time_column=time_column, webhook_url=webhook, send_webhook=not no_webhook)
                   for f in families]
        print_summary(results)
        return exit_code(results, cfg.exit_severity)

    code = run_guarded(_run)
    if code:
        raise typer.Exit(code)


def retrain_command(
    if_drift: bool = typer.Option(False, "--if-drift", help="Retrain only the families whose monitor alerts "
                                                            "(at or above retrain.min_severity)."),
    family: str = typer.Option("all", help=FAMILY_HELP),
    window: Optional[str] = typer.Option(None, help="Monitor window, e.g. 7d."),
    until: Optional[str] = typer.Option(None, help="End of the monitor window, ISO UTC (default now)."),
    config: Optional[Path] = typer.Option(None, help="Monitoring config (default configs/monitoring.yaml)."),
) -> None:
    """Run the monitor, retrain drifted families on data up to now, send the result through the promotion gate."""
    from tradecast.cli import run_guarded

    def _run() -> int:
        from monitoring.config import load_monitoring_config
        from monitoring.monitor import parse_until
        from monitoring.report import print_summary
        from monitoring.retrain import retrain_families

        cfg = load_monitoring_config(config)
        outcome = retrain_families(_families(family), cfg, if_drift=if_drift, until=parse_until(until),
                                   window=window, progress=typer.echo)
        if outcome.monitor_results:
            print_summary(outcome.monitor_results)
        for line in outcome.lines():
            typer.echo(line)
        return 2 if outcome.failed else 0

    code = run_guarded(_run)
    if code:
        raise typer.Exit(code)


@outcomes_app.command("ingest")
def outcomes_ingest(
    family: str = typer.Option(..., help="demand (sku_id, market, date, units), delay (shipment_id, transit_days "
                                         "and/or delivered_at, late) or risk (order_id, is_fraud, "
                                         "fraud_reported_at, is_compliance_issue, compliance_reported_at)."),
    source: Path = typer.Option(..., help="CSV or Parquet file of outcomes."),
) -> None:
    """Validate outcome labels and merge them into the outcome store (matched to predictions by id)."""
    from tradecast.cli import run_guarded

    def _run() -> None:
        from monitoring.outcomes import ingest_outcomes

        typer.echo(ingest_outcomes(family, source).describe())

    run_guarded(_run)
