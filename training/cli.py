"""`tradecast train ...` and `tradecast models ...`: parse options and call training.pipeline / training.registry.

Only typer and the standard library are imported here; the heavy modules load inside the commands.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

FAMILY_CHOICES = ("demand", "delay", "risk", "all")
KEY_METRICS = {
    "demand": ["accuracy", "mase", "bias", "pinball", "coverage_p10_p90"],
    "delay": ["mae", "p90_coverage", "late_auc", "late_brier", "recall_48h"],
    "risk": ["fraud_pr_auc", "fraud_recall_at_fa", "fraud_brier", "fraud_ece", "compliance_pr_auc",
             "compliance_recall_at_fa", "compliance_ece"],
}

models_app = typer.Typer(help="Registered models: list champions and challengers, promote by hand.",
                         no_args_is_help=True)


def train_command(
    family: str = typer.Argument(..., help="demand, delay, risk or all"),
    config: Optional[Path] = typer.Option(None, "--config", help="Config file (default configs/<family>.yaml)."),
) -> None:
    """Build the training set, backtest, fit, log to MLflow, register and run the promotion gate."""
    from tradecast.cli import run_guarded

    def _run() -> None:
        from tradecast.errors import TradecastError

        if family not in FAMILY_CHOICES:
            raise TradecastError(f"family '{family}': choose one of {', '.join(FAMILY_CHOICES)}")
        if family == "all" and config is not None:
            raise TradecastError("--config names one family's file; with 'all' use configs/ or TRADECAST_CONFIG_DIR")
        families = ["demand", "delay", "risk"] if family == "all" else [family]
        started = time.perf_counter()
        for name in families:
            _train_one(name, config)
        if len(families) > 1:
            typer.echo(f"\ntrained {len(families)} families in {time.perf_counter() - started:.1f}s")

    run_guarded(_run)


def _train_one(name: str, config: Optional[Path]) -> None:
    from training.pipeline import format_table, train_family

    started = time.perf_counter()

    def progress(message: str) -> None:
        typer.echo(f"[{name} {time.perf_counter() - started:6.1f}s] {message}", err=True)

    result = train_family(name, str(config) if config else None, progress)
    candidates = list(result.metrics["candidate"].unique())
    typer.echo(f"\n== {name}: backtest {result.window} ({result.rows:,} examples), overall metrics ==")
    typer.echo(format_table(result.metrics, KEY_METRICS[name] + ["n"] if name != "risk" else KEY_METRICS[name],
                            candidates))
    if name == "demand" and not result.breakdown.empty:
        typer.echo("\naccuracy by SKU tier, day type and horizon:")
        pivot = result.breakdown.pivot_table(index=["split", "group"], columns="candidate", values="accuracy")
        typer.echo(pivot.round(4).to_string())
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    typer.echo(f"\nselected: {result.selected}; registered version {result.version}; "
               f"{'PROMOTED to champion' if result.gate_promoted else 'kept as challenger'}")
    typer.echo(f"gate: {result.gate_reason}")
    typer.echo(f"champion: v{result.champion_before or '-'} -> v{result.champion_after or '-'}; time per stage: {timings}")


@models_app.command("list")
def models_list() -> None:
    """Each family's champion and challenger with their backtest metrics."""
    from tradecast.cli import run_guarded

    def _run() -> None:
        from training.registry import family_summary

        for family in ("demand", "delay", "risk"):
            summary = family_summary(family)
            typer.echo(f"{summary['model']}:")
            for alias in ("champion", "challenger"):
                info = summary[alias]
                if info is None:
                    typer.echo(f"  {alias:<10}  -")
                    continue
                metrics = ", ".join(f"{k}={info['metrics'][k]:.4f}" for k in KEY_METRICS[family]
                                    if k in info["metrics"])
                typer.echo(f"  {alias:<10}  v{info['version']} ({info['estimator']}, window {info['window']}) {metrics}")
                if info["reason"]:
                    typer.echo(f"  {'':<10}  reason: {info['reason']}")

    run_guarded(_run)


@models_app.command("promote")
def models_promote(
    family: str = typer.Argument(..., help="demand, delay or risk"),
    version: str = typer.Argument(..., help="registered version number to make champion"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Make VERSION the champion of FAMILY by hand (shows what it replaces and asks first)."""
    from tradecast.cli import run_guarded

    def _run() -> None:
        import getpass

        from training import registry

        current = registry.champion_version(family)
        new_metrics = registry.version_metrics(family, version)
        if current == str(version):
            typer.echo(f"{registry.registered_name(family)} v{version} is already the champion")
            return
        shown = KEY_METRICS[family]
        typer.echo(f"{registry.registered_name(family)}: promote v{version} to champion")
        typer.echo(f"  new:      v{version} " + ", ".join(f"{k}={new_metrics[k]:.4f}" for k in shown if k in new_metrics))
        if current:
            old = registry.version_metrics(family, current)
            typer.echo(f"  replaces: v{current} " + ", ".join(f"{k}={old[k]:.4f}" for k in shown if k in old))
        else:
            typer.echo("  replaces: no current champion")
        if not yes and not typer.confirm("Proceed?", default=False):
            typer.echo("not promoted")
            raise typer.Exit(1)
        replaced = registry.promote(family, version, f"promoted by hand by {getpass.getuser()}")
        typer.echo(f"v{version} is now the champion" + (f" (replaced v{replaced})" if replaced else ""))

    run_guarded(_run)
