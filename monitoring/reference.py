"""Where the drift reference comes from, and the champion's backtest metrics.

`load_reference(family, window_start, ...)` tries, in order:
1. `--reference FILE` (Parquet or CSV; columns named like the prediction log: f_*, in_*, out_*, or bare
   feature names, which are read as features);
2. the champion run's MLflow artifact `reference/reference.parquet` (a sample of its training feature frame with
   feature and prediction columns), when the training pipeline logged one;
3. the prediction log of the `reference_days` before the window (what the service saw and answered earlier);
4. the canonical table of the family (daily_sales / shipments / orders) in the `reference_days` before the
   window, as request fields (in_*); prediction drift is then not tested (no outputs there).
The first that yields at least `min_rows` rows wins; its name is recorded in every report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from monitoring.config import MonitoringConfig
from monitoring.predlog import read_prediction_log
from tradecast.errors import TradecastError

REFERENCE_ARTIFACT = "reference/reference.parquet"
FAMILY_TABLE = {"demand": ("daily_sales", "date"), "delay": ("shipments", "created_at"), "risk": ("orders", "ordered_at")}
# training's output names -> the names serving logs
OUTPUT_ALIASES = {"p50_days": "transit_days_p50", "p90_days": "transit_days_p90"}
# outcome columns in canonical tables: never inputs
OUTCOME_COLUMNS = {"units", "stock_out", "clearance_hours", "transit_days", "delivered_at", "late", "is_fraud",
                   "fraud_reported_at", "is_compliance_issue", "compliance_reported_at"}


@dataclass(frozen=True)
class Reference:
    frame: pd.DataFrame
    source: str  # human-readable: where the rows came from

    @property
    def empty(self) -> bool:
        return self.frame is None or not len(self.frame)


@dataclass(frozen=True)
class ChampionInfo:
    version: str
    run_id: str | None
    metrics: dict[str, float]


def normalize_reference_columns(frame: pd.DataFrame, prediction_names: list[str]) -> pd.DataFrame:
    """Name bare columns like the log: outputs -> out_<name>, targets y_* kept, everything else f_<name>."""
    renamed = {}
    for col in frame.columns:
        if col.startswith(("f_", "in_", "out_", "y_")):
            continue
        name = OUTPUT_ALIASES.get(col, col)
        renamed[col] = f"out_{name}" if name in prediction_names else f"f_{col}"
    return frame.rename(columns=renamed)


def sample_rows(frame: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    return frame.sample(n=cap, random_state=seed).reset_index(drop=True) if len(frame) > cap else frame


def read_reference_file(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise TradecastError(f"--reference {path}: file not found")
    try:
        return pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as exc:
        raise TradecastError(f"--reference {path}: cannot read: {exc}") from exc


def mlflow_available() -> bool:
    """True when a tracking server is configured or the local MLflow database exists (never creates one)."""
    import os

    from tradecast.paths import mlflow_dir

    return bool(os.environ.get("MLFLOW_TRACKING_URI")) or (mlflow_dir() / "mlflow.db").exists()


def champion_info(family: str) -> ChampionInfo | None:
    """The family's champion version, its run and its backtest metrics; None without MLflow or champion."""
    if not mlflow_available():
        return None
    try:
        from training import registry
    except ImportError:  # training stage not installed
        return None
    version = registry.champion_version(family)
    if version is None:
        return None
    client = registry.setup_mlflow()
    mv = client.get_model_version(registry.registered_name(family), version)
    metrics = registry.version_metrics(family, version)
    if mv.run_id:
        try:  # run metrics fill what the version tags do not carry
            run_metrics = client.get_run(mv.run_id).data.metrics
            metrics = {**run_metrics, **metrics}
        except Exception:
            pass
    return ChampionInfo(version=str(version), run_id=mv.run_id, metrics=metrics)


def champion_reference(champion: ChampionInfo | None) -> pd.DataFrame | None:
    """The champion run's `reference/reference.parquet` artifact, or None when it was not logged."""
    if champion is None or not champion.run_id:
        return None
    import tempfile

    import mlflow

    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(run_id=champion.run_id, artifact_path=REFERENCE_ARTIFACT,
                                                        dst_path=tmp)
            return pd.read_parquet(local)
    except Exception:  # not logged by this run
        return None


def canonical_reference(family: str, since: datetime, until: datetime) -> pd.DataFrame | None:
    """Rows of the family's canonical table in [since, until) as request fields (in_*), outcomes dropped."""
    from features.offline import read_table, table_exists

    table, time_col = FAMILY_TABLE[family]
    if not table_exists(table):
        return None
    frame = read_table(table)
    times = pd.to_datetime(frame[time_col])
    frame = frame.loc[(times >= pd.Timestamp(since)) & (times < pd.Timestamp(until))]
    frame = frame.drop(columns=[c for c in frame.columns if c in OUTCOME_COLUMNS])
    return frame.add_prefix("in_").reset_index(drop=True)


def load_reference(family: str, window_start: datetime, cfg: MonitoringConfig, path: Path | None = None,
                   time_column: str = "logged_at", champion: ChampionInfo | None = None) -> Reference:
    """The reference frame for `family` (see the module docstring for the order tried)."""
    fam = cfg.family(family)
    cap, seed, need = cfg.reference_sample_rows, cfg.seed, cfg.min_rows
    if path is not None:
        frame = normalize_reference_columns(read_reference_file(path), fam.prediction_columns)
        return Reference(sample_rows(frame, cap, seed), f"file {path}")
    frame = champion_reference(champion)
    if frame is not None and len(frame) >= need:
        frame = normalize_reference_columns(frame, fam.prediction_columns)
        return Reference(sample_rows(frame, cap, seed),
                         f"champion v{champion.version} training sample ({REFERENCE_ARTIFACT})")
    since = window_start - timedelta(days=cfg.reference_days)
    logged = read_prediction_log(family, since, window_start, time_column).frame
    if len(logged) >= need:
        return Reference(sample_rows(logged, cap, seed),
                         f"prediction log {since:%Y-%m-%d %H:%M} to {window_start:%Y-%m-%d %H:%M}")
    table = canonical_reference(family, since, window_start)
    if table is not None and len(table) >= need:
        return Reference(sample_rows(table, cap, seed),
                         f"{FAMILY_TABLE[family][0]} table {since:%Y-%m-%d} to {window_start:%Y-%m-%d} (inputs only)")
    return Reference(pd.DataFrame(), "none found (no reference file, champion sample, earlier log or table rows)")


def describe(champion: ChampionInfo | None) -> dict[str, Any] | None:
    if champion is None:
        return None
    return {"version": champion.version, "run_id": champion.run_id}
