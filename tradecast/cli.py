"""The `tradecast` command line: parses options, loads config and calls plain functions. Nothing else.

Heavy libraries are imported inside the commands so `tradecast --help` stays fast.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from tradecast.errors import TradecastError

app = typer.Typer(
    help="tradecast: demand, transit-delay and fraud/compliance risk models for cross-border e-commerce.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Generate synthetic data or ingest your own into the offline store.", no_args_is_help=True)
app.add_typer(data_app, name="data")
from features.cli import app as features_app  # noqa: E402

app.add_typer(features_app, name="features")

console = Console(stderr=True)


def run_guarded(func, *args, **kwargs):
    """Call `func`, turning a TradecastError into a clear message and exit status 2."""
    try:
        return func(*args, **kwargs)
    except TradecastError as exc:
        from rich.markup import escape

        # escape: messages quote user data ("[...]" would be read as markup); soft_wrap: no inserted line breaks.
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(2) from None


@app.callback()
def main_options(
    profile: Optional[str] = typer.Option(
        None, "--profile", envvar="TRADECAST_PROFILE",
        help="Configuration profile applied before any stage loads its config: 'default' (embedded SQLite/Parquet) "
             "or a file in configs/profiles/, e.g. 'shared' (Redis online store, MLflow on PostgreSQL, Dask).",
    ),
) -> None:
    # no docstring: the app's help text stays the one given to typer.Typer above
    if profile:
        from tradecast.profiles import apply_profile

        run_guarded(apply_profile, profile)


@app.command("profile")
def profile_show(
    name: Optional[str] = typer.Argument(None, help="Profile to show (default: the active one, $TRADECAST_PROFILE)."),
) -> None:
    """Show the environment variables a profile sets for the stages (passwords masked)."""
    import os

    from tradecast.profiles import DEFAULT_PROFILE, PROFILE_ENV, available_profiles, describe_profile

    def _run():
        for line in describe_profile(name or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE):
            typer.echo(line)
        typer.echo(f"available: {', '.join(available_profiles())}")

    run_guarded(_run)


@data_app.command("generate")
def data_generate(
    scale: str = typer.Option("small", help="Data scale: tiny, small, medium or large (see configs/data.yaml)."),
    seed: int = typer.Option(42, help="Random seed; the same seed gives byte-identical tables."),
    scenario: Optional[str] = typer.Option(None, help="Inject a dated shift: red_sea, new_live_channel or fraud_ring."),
    start: Optional[str] = typer.Option(None, help="First day, YYYY-MM-DD (default from configs/data.yaml)."),
    days: Optional[int] = typer.Option(None, help="Number of days (default from configs/data.yaml)."),
    config: Optional[Path] = typer.Option(None, help="Data config file (default configs/data.yaml)."),
) -> None:
    """Write the canonical tables (merchants, skus, daily_sales, shipments, orders) to the offline store."""
    from features.generate import generate_to_store, load_data_config, summary_lines

    def _run():
        cfg = load_data_config(config)
        start_date = _parse_date(start, "--start") if start else None
        tables = generate_to_store(cfg, scale=scale, seed=seed, scenario=scenario, start=start_date, days=days,
                                   show_progress=True)
        for line in summary_lines(tables):
            typer.echo(line)

    run_guarded(_run)


@data_app.command("ingest")
def data_ingest(
    table: str = typer.Option(..., help="Canonical table: merchants, skus, daily_sales, shipments or orders."),
    source: Path = typer.Option(..., help="CSV (optionally .gz/.zip) or Parquet file to read."),
    mapping: Optional[Path] = typer.Option(None, help="Mapping YAML onto the canonical columns (configs/datasets/*.yaml)."),
) -> None:
    """Validate a file against the canonical schema and write it to the offline store (all or nothing)."""
    from features.ingest import ingest_file

    def _run():
        result = ingest_file(table=table, source=source, mapping=mapping)
        typer.echo(result.describe())

    run_guarded(_run)


@app.command("demo")
def demo(
    scale: str = typer.Option("small", help="Data scale for the demo (tiny, small, medium, large)."),
    seed: int = typer.Option(42, help="Random seed of the generated data."),
    fresh: bool = typer.Option(False, "--fresh/--reuse",
                               help="--fresh wipes what the demo owns in $TRADECAST_HOME and starts over; --reuse "
                                    "(default) keeps the data and first models when their fingerprint matches."),
    port: Optional[int] = typer.Option(None, help="Port for the demo's service (default: a free one)."),
) -> None:
    """Run the main job end to end: data with a fraud ring starting part-way -> features -> train 3 families -> serve ->
    traffic -> outcomes -> monitor (drift) -> gated retrain -> new version served."""
    from tradecast.demo import run_with_display

    run_guarded(run_with_display, scale=scale, seed=seed, fresh=fresh, port=port)


from monitoring.cli import monitor_command, outcomes_app, retrain_command  # noqa: E402

app.command("monitor")(monitor_command)
app.command("retrain")(retrain_command)
app.add_typer(outcomes_app, name="outcomes")
from serving.cli import serve as serve_command  # noqa: E402

app.command("serve")(serve_command)
from training.cli import models_app, train_command  # noqa: E402

app.command("train")(train_command)
app.add_typer(models_app, name="models")


def _parse_date(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise TradecastError(f"{option}: '{text}' is not a date in YYYY-MM-DD form") from None


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
