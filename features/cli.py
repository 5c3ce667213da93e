"""`tradecast features ...`: compute feature sources, register Feast definitions, materialize the online store.

Only typer and the standard library at module top; the work happens in features.store / features.compute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Feature store (Feast): compute feature sources, apply definitions, materialize.",
                  no_args_is_help=True)


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def _load(config: Optional[Path]):
    from features.compute import load_features_config

    return load_features_config(config)


@app.command("compute")
def compute(config: Optional[Path] = typer.Option(None, help="Features config (default configs/features.yaml).")) -> None:
    """Compute every feature view's source Parquet from the canonical tables in the offline store."""
    from tradecast.cli import run_guarded

    def _run():
        import time

        from features.compute import compute_features

        t0 = time.perf_counter()
        _echo("computing feature sources from the offline store ...")
        written = compute_features(_load(config), progress=_echo)
        typer.echo(f"computed {len(written)} feature sources ({sum(written.values()):,} rows) in "
                   f"{time.perf_counter() - t0:.1f}s")

    run_guarded(_run)


@app.command("apply")
def apply(
    compute_sources: bool = typer.Option(True, "--compute/--no-compute",
                                         help="Recompute the feature sources from the canonical tables first."),
    config: Optional[Path] = typer.Option(None, help="Features config (default configs/features.yaml)."),
) -> None:
    """Register entities, feature views, on-demand views and services in the Feast registry under $TRADECAST_HOME.

    By default it first recomputes the feature sources (as `tradecast features compute`), so that
    `apply` then `materialize` is all a fresh home needs after `tradecast data generate`.
    """
    from tradecast.cli import run_guarded

    def _run():
        from features.compute import compute_features
        from features.store import apply_definitions, get_store

        cfg = _load(config)
        if compute_sources:
            _echo("computing feature sources from the offline store ...")
            compute_features(cfg, progress=_echo)
        names = apply_definitions(get_store(cfg))
        typer.echo(f"applied {len(names)} Feast objects (services: demand_v1, delay_v1, risk_v1)")

    run_guarded(_run)


@app.command("materialize")
def materialize(
    end: Optional[str] = typer.Option(None, help="Materialize up to this time (ISO, UTC; default now)."),
    config: Optional[Path] = typer.Option(None, help="Features config (default configs/features.yaml)."),
) -> None:
    """Load feature values into the online store incrementally (from where the last run ended) up to --end."""
    from tradecast.cli import run_guarded
    from tradecast.errors import TradecastError

    def _run():
        import pandas as pd

        from features.store import get_store, materialize as run_materialize

        if end is not None:
            try:
                pd.Timestamp(end)
            except ValueError:
                raise TradecastError(f"--end: '{end}' is not a date/time (use e.g. 2025-06-30 or 2025-06-30T12:00)") from None
        store = get_store(_load(config))
        if not store.list_feature_views():
            raise TradecastError("no feature views registered; run `tradecast features apply` first")
        summary = run_materialize(store, end=end, progress=_echo)
        total = sum(sec for _, sec in summary.views.values())
        typer.echo(f"materialized {len(summary.views)} feature views up to {summary.end:%Y-%m-%d %H:%M} UTC in {total:.1f}s")

    run_guarded(_run)
