"""Serving config, champion loading with a local copy, and the Feast feature source.

Champions: at startup each family's `champion` alias is resolved in the MLflow registry; the version's model
folder is copied once to `$TRADECAST_HOME/models/<family>/v<version>/` and loaded from there, and
`<family>/champion.json` records it. When the registry cannot be reached (or has no champion), the service
starts from the recorded local copy instead. `ServingRuntime.reload()` (polled every `reload_poll_s` and on
POST /admin/reload) loads a moved alias in the background and swaps it in with one assignment, so requests
in flight finish on the old model and none are dropped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from pydantic import Field

from serving.bundle import FAMILIES, FEATURE_SERVICES, FeatureVectors, ModelBundle
from tradecast.config import ConfigModel, load_config
from tradecast.errors import TradecastError
from tradecast.paths import ensure_dir, models_cache_dir

logger = logging.getLogger("tradecast.serving")


class PredictionLogConfig(ConfigModel):
    flush_interval_s: float = Field(1.0, gt=0, le=300)
    fsync: bool = True


class ServingConfig(ConfigModel):
    """configs/serving.yaml."""

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    families: list[str] = Field(default_factory=lambda: list(FAMILIES))
    max_batch_items: int = Field(500, ge=1, le=100_000)
    max_body_bytes: int = Field(8_000_000, ge=1000)
    alert_delay_hours: float = Field(48.0, gt=0)
    risk_levels: dict[str, float] = Field(default_factory=lambda: {"low": 0.0, "medium": 0.2, "high": 0.5,
                                                                    "critical": 0.8})
    reload_poll_s: float = Field(30.0, ge=0)
    registry_timeout_s: float = Field(10.0, gt=0)
    prediction_log: PredictionLogConfig = Field(default_factory=PredictionLogConfig)
    # SQLite online store: the velocity push commits in WAL mode with synchronous=NORMAL (no fsync per order;
    # a power cut can lose the last updates, never corrupt the file). False: SQLite's defaults (fsync per commit).
    online_store_wal: bool = True
    # BentoML's access log: one line per request on the server's stderr (prediction endpoints are also in the
    # prediction log under their request id; /metrics counts requests by endpoint and status)
    access_log: bool = True
    runtime_factory: Optional[str] = None
    # single requests arriving together are scored in one call of up to this many (1: each on its own); a call
    # waits at most coalesce_linger_ms for requests already accepted by the worker (serving/coalesce.py)
    coalesce_max_items: int = Field(32, ge=1, le=500)
    coalesce_linger_ms: float = Field(2.0, ge=0, le=50)

    def model_post_init(self, _context: Any) -> None:
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ValueError(f"families: unknown {unknown}; choose from {list(FAMILIES)}")


def load_serving_config(path: Path | str | None = None) -> ServingConfig:
    """configs/serving.yaml (or `path`, or $TRADECAST_SERVING_CONFIG) with TRADECAST_SERVING__* overrides."""
    return load_config(ServingConfig, "serving", path or os.environ.get("TRADECAST_SERVING_CONFIG") or None)


# ------------------------------------------------------------------ models


class TradecastModelBundle:
    """A training.pyfunc.TradecastModel as a ModelBundle (output names mapped onto the serving contract)."""

    RENAME = {"p50_days": "transit_days_p50", "p90_days": "transit_days_p90"}

    def __init__(self, family: str, name: str, version: str, model: Any) -> None:
        self.family = family
        self.name = name
        self.version = str(version)
        self.model = model

    @property
    def supports_columns(self) -> bool:
        """Whether `predict_columns` answers without DataFrames (risk with LightGBM classifiers)."""
        if self.family != "risk":
            return False
        from training.risk import supports_columns

        return supports_columns(self.model)

    def predict_columns(self, columns: dict[str, np.ndarray]) -> dict[str, Any]:
        """`predict` for column -> array input (see `supports_columns`): column -> array out, reasons as lists."""
        from training.risk import predict_output_columns

        out = predict_output_columns(self.model, columns)
        out["reasons"] = [[r for r in text.split("; ") if r] for text in out.pop("reason_codes")]
        return out

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = self.model.predict_frame(frame).rename(columns=self.RENAME).reset_index(drop=True)
        if "reason_codes" in out.columns:
            out["reasons"] = [[r for r in str(text).split("; ") if r] if isinstance(text, str) else []
                              for text in out.pop("reason_codes")]
        return out


def registered_name(family: str) -> str:
    from training.registry import registered_name as name

    return name(family)


def cache_record_path(family: str) -> Path:
    """`champion.json` of a family in the local model cache."""
    return models_cache_dir() / family / "champion.json"


def read_cache_record(family: str) -> dict[str, Any] | None:
    path = cache_record_path(family)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        logger.warning("%s is damaged; ignoring the local copy", path)
        return None


def write_cache_record(family: str, record: dict[str, Any]) -> None:
    path = cache_record_path(family)
    ensure_dir(path.parent)
    tmp = path.with_name(f".champion.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


class MlflowChampions:
    """Champion versions from the MLflow registry, model folders through the local cache."""

    def champion_version(self, family: str) -> str | None:
        """The registry's champion version (raises when the registry is unreachable)."""
        from training.registry import champion_version

        return champion_version(family)

    def fetch(self, family: str, version: str) -> Path:
        """Local folder of a version, downloaded once (atomic rename, safe with several workers)."""
        from training.registry import download_version

        final = models_cache_dir() / family / f"v{version}"
        if not final.exists():
            tmp = ensure_dir(models_cache_dir() / family / f".tmp-v{version}-{os.getpid()}-{threading.get_ident()}")
            try:
                download_version(family, version, tmp)
                try:
                    os.rename(tmp, final)
                except OSError:  # another worker finished first
                    if not final.exists():
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def load_path(self, family: str, version: str, folder: Path) -> ModelBundle:
        from training.registry import load_model_from_path

        model_dir = _model_dir(folder)
        return TradecastModelBundle(family, registered_name(family), version, load_model_from_path(model_dir))

    def load(self, family: str, version: str) -> ModelBundle:
        """Fetch and load a version, recording it as the local champion copy."""
        folder = self.fetch(family, version)
        bundle = self.load_path(family, version, folder)
        write_cache_record(family, {"family": family, "name": bundle.name, "version": str(version),
                                    "folder": folder.name})
        return bundle

    def load_cached(self, family: str) -> ModelBundle | None:
        """The champion copy recorded locally, without the registry (None when there is none)."""
        record = read_cache_record(family)
        if not record:
            return None
        folder = models_cache_dir() / family / record["folder"]
        if not folder.exists():
            return None
        return self.load_path(family, record["version"], folder)


def _model_dir(folder: Path) -> Path:
    """The MLflow model folder (holding MLmodel) inside a downloaded version folder."""
    if (folder / "MLmodel").exists():
        return folder
    found = sorted(p.parent for p in folder.rglob("MLmodel"))
    if not found:
        raise TradecastError(f"{folder}: no MLflow model (MLmodel file) inside")
    return found[0]


def load_champion_bundle(source: MlflowChampions, family: str) -> ModelBundle | None:
    """The registry's champion (through the cache), else the local copy, else None (logged)."""
    try:
        version = source.champion_version(family)
    except Exception as exc:  # registry down: the local copy is what we can serve
        logger.warning("registry unreachable for %s (%s); starting from the local copy", family, exc)
        version = None
    if version is not None:
        try:
            return source.load(family, version)
        except Exception as exc:
            logger.warning("cannot fetch %s v%s (%s); trying the local copy", family, version, exc)
    bundle = source.load_cached(family)
    if bundle is None:
        logger.error("no champion for %s in the registry and no local copy: train and promote one", family)
    else:
        logger.warning("serving %s v%s from the local copy", family, bundle.version)
    return bundle


# ------------------------------------------------------------------ features


# request columns entity_rows rewrites the way training did (null category -> 'unknown', ...)
REWRITTEN: dict[str, tuple[str, ...]] = {"delay": ("category",), "risk": ("category", "device_id", "ip")}


def _text(values: Any, missing: str) -> np.ndarray:
    """Text values with nulls as `missing` (an object array; plain Python over the few rows of a request)."""
    items = values.tolist() if hasattr(values, "tolist") else list(values)
    return np.array([missing if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v
                     for v in items], dtype=object)


def _with_columns(rows: pd.DataFrame, new: dict[str, np.ndarray]) -> pd.DataFrame:
    """`rows` with columns replaced or appended, built by one constructor (inserting column by column copies
    the frame's blocks each time: most of this step's cost for a single request)."""
    data = {c: new[c] if c in new else rows[c].to_numpy() for c in rows.columns}
    data.update({c: v for c, v in new.items() if c not in data})
    return pd.DataFrame(data, index=rows.index)


def entity_columns(family: str, rows: Any) -> dict[str, np.ndarray]:
    """The columns `entity_rows` adds or rewrites for delay and risk, from request rows given as a frame or as
    column -> array (the request path)."""
    if family == "delay":
        lanes = rows["lane"].tolist() if hasattr(rows["lane"], "tolist") else list(rows["lane"])
        modes = rows["mode"].tolist() if hasattr(rows["mode"], "tolist") else list(rows["mode"])
        return {"lane_mode": np.array([f"{lane}|{mode}" for lane, mode in zip(lanes, modes)], dtype=object),
                "category": _text(rows["category"], "unknown"),
                "event_timestamp": np.asarray(rows["created_at"], dtype="datetime64[ns]")}
    if family == "risk":
        ordered = np.asarray(rows["ordered_at"], dtype="datetime64[ns]")
        created = np.asarray(rows["account_created_at"], dtype="datetime64[ns]")
        return {"order_category": np.asarray(rows["category"], dtype=object),
                "category": _text(rows["category"], "unknown"),
                "device_id": _text(rows["device_id"], ""),
                "ip": _text(rows["ip"], ""),
                "account_age_days": ((ordered - created) / np.timedelta64(1, "D")).astype(float),
                "event_timestamp": ordered}
    raise ValueError(f"entity_columns: no column form for family '{family}'")


def entity_rows(family: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Request rows -> the join keys and request columns of the family's feature service, derived exactly as
    features.store.{demand,delay,risk}_entities derive them for training."""
    if family in ("delay", "risk"):
        return _with_columns(rows, entity_columns(family, rows))
    out = rows.copy()
    if family == "demand":
        from features.on_demand import calendar_columns

        out["series_id"] = out["sku_id"].astype(str) + "|" + out["market"].astype(str)
        out["target_date"] = out["date"]
        out["as_of"] = out["date"] - pd.to_timedelta(out["horizon"] - 1, unit="D")
        out["event_timestamp"] = out["as_of"]
        out["is_promotion"] = (out["promotion_event"].notna()
                               & (out["promotion_event"].astype(str) != "")).astype(float)
        cal = calendar_columns(out["date"].reset_index(drop=True))
        for c in cal.columns:
            out[c] = cal[c].to_numpy()
    return out


class FeastFeatureSource:
    """features.store online lookup (Feast online store + on-demand features) and the velocity push, both
    through features.online.OnlineTables (the store's own online_read / online_write_batch, views resolved
    once)."""

    def __init__(self, wal: bool = False) -> None:
        from features.online import OnlineTables
        from features.store import default_store

        self.store = default_store()
        self.tables = OnlineTables(self.store)
        if wal:
            self.tables.use_wal()

    def lookup(self, family: str, rows: pd.DataFrame) -> FeatureVectors:
        from features.store import online_features

        entities = entity_rows(family, rows)
        result = online_features(FEATURE_SERVICES[family], entities, tables=self.tables)
        derived = [c for c in entities.columns if c not in rows.columns or c in REWRITTEN.get(family, ())]
        frame = pd.concat([entities[derived].reset_index(drop=True), result.frame.reset_index(drop=True)], axis=1)
        frame = frame.loc[:, ~frame.columns.duplicated(keep="last")]
        return FeatureVectors(frame, np.asarray(result.defaults_used, dtype=bool))

    def lookup_columns(self, family: str, rows: dict[str, np.ndarray],
                       pushed: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """`lookup` for request rows as column -> array: (the derived entity columns and the features, as
        `lookup`'s frame holds them; defaults_used per row), without DataFrames (the risk request path).
        `pushed`: what `push_orders` just wrote for these rows, used instead of reading it back."""
        from features.store import online_feature_columns

        derived = entity_columns(family, rows)
        values, unknown = online_feature_columns(FEATURE_SERVICES[family], {**rows, **derived}, self.tables,
                                                 known=pushed)
        return {**derived, **values}, unknown

    def push_orders(self, orders: pd.DataFrame | dict[str, np.ndarray]) -> dict[str, Any]:
        """Push the orders into the velocity rows; returns the rows written (view -> entity id -> features)."""
        from features.store import push_order_velocity

        # one commit per request, not one per entity view
        with self.tables.one_transaction(), self.tables.recording_writes() as written:
            push_order_velocity(None, orders, tables=self.tables)
        return written
