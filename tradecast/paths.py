"""Where state lives: everything generated goes under $TRADECAST_HOME (default ./.tradecast).

Functions only compute paths; `ensure_dir` is the single place that creates folders, so nothing
happens on import.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"


def home() -> Path:
    """The state directory: $TRADECAST_HOME, or `.tradecast/` in the working directory."""
    return Path(os.environ.get("TRADECAST_HOME") or Path.cwd() / ".tradecast").resolve()


def ensure_dir(path: Path) -> Path:
    """Create `path` (and parents) if missing and return it."""
    path.mkdir(parents=True, exist_ok=True)
    return path


def offline_dir() -> Path:
    """Offline store: one Parquet file per canonical table or feature source."""
    return home() / "offline"


def table_path(table: str) -> Path:
    """Parquet file of a canonical table in the offline store."""
    return offline_dir() / f"{table}.parquet"


def feature_data_dir() -> Path:
    """Feature-view sources computed from the canonical tables."""
    return home() / "features"


def feast_dir() -> Path:
    """Feast registry and SQLite online store."""
    return home() / "feast"


def mlflow_dir() -> Path:
    """Default MLflow backend (SQLite) and artifact folder."""
    return home() / "mlflow"


def models_cache_dir() -> Path:
    """Local copies of champion models, so serving can start without the registry."""
    return home() / "models"


def prediction_log_dir() -> Path:
    """Durable prediction log written by serving, read by monitoring."""
    return home() / "predictions"


def outcomes_dir() -> Path:
    """Delayed outcomes (sales, deliveries, chargebacks) ingested for monitoring."""
    return home() / "outcomes"


def reports_dir() -> Path:
    """Evidently HTML reports, JSON summaries and alert records."""
    return home() / "reports"
