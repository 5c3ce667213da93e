"""The Feast feature store of tradecast: construction, apply, materialize, training sets and online lookup.

Public API (training and serving code against these):

- `get_store(config=None) -> feast.FeatureStore`; `default_store()` caches one per home for serving
- `apply_definitions(store=None) -> list[str]`
- `compute_features(config=None, progress=None, tables=None) -> dict[str, int]`   (from features.compute)
- `materialize(store=None, end=None, progress=None) -> MaterializeSummary`
- `feature_names(service_name, config=None) -> list[str]`
- `training_frame(service_name, entity_df, store=None, fill_defaults=True) -> pd.DataFrame`
- `demand_entities(daily_sales, horizons=..., origins=None, as_of=None)`, `delay_entities(shipments, as_of=None)`,
  `risk_entities(orders, as_of=None, label="fraud")`: entity frames (join keys, event_timestamp, request columns, labels)
- `online_features(service_name, entities, request_data=None, store=None) -> OnlineResult`
- `push_order_velocity(store, orders) -> int`: serving pushes each order into the velocity features.

Time conventions (no future leakage):
- The entity frame's `event_timestamp` is the prediction time. Feast joins, per view, the latest row stamped
  <= event_timestamp and not older than the view's TTL (configs/features.yaml `ttl_days`).
- demand: a row stamped T summarises the days strictly before T (day D is complete at D+1 00:00). An example
  with event_timestamp = midnight of its forecast origin day O sees sales up to O-1; horizon h targets O+h-1.
- delay: a lane/carrier statistic stamped T uses only shipments *delivered* at or before T (outcomes are unknown
  before delivery); congestion counts use shipments *created* at or before T. Examples are stamped created_at.
- risk: a buyer/device/IP row stamped T is the state after every order placed at or before T, so an order's own
  row is included (serving pushes the order with `push_order_velocity`, then reads); chargeback and compliance
  counts use only labels whose `*_reported_at` <= T. Examples are stamped ordered_at.

Defaults (unknown entities, missing values): count features 0, string features "unknown", every other feature
the median of the feature rows of the 91 days before the materialization end, computed at materialize time and stored in
$TRADECAST_HOME/feast/feature_defaults.json. The same fill is applied to training frames (fill_defaults=True),
then the request-time features (features/on_demand.py) are computed from the filled values, identically in
training and serving.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from features.compute import FeaturesConfig, compute_features, load_features_config  # noqa: F401 (re-export)
from tradecast.errors import TradecastError

if TYPE_CHECKING:  # feast is heavy: imported inside functions
    import feast

    from features.online import OnlineTables

Progress = Callable[[str], None]
REPO_DIR = Path(__file__).resolve().parent / "feature_repo"
DEFAULTS_FILE = "feature_defaults.json"
JOIN_KEY_OF_VIEW = {
    "demand_series": "series_id", "delay_lane": "lane_mode", "delay_carrier": "carrier", "category_norms": "category",
    "risk_merchant": "merchant_id", "buyer_activity": "buyer_id", "device_activity": "device_id", "ip_activity": "ip",
}


@dataclass
class OnlineResult:
    """Online feature vectors for a list of entities.

    frame: one row per requested entity, columns = `feature_names(service)` in training order.
    defaults_used: one bool per row, True when an entity of the row is unknown to the online store (so its
        features are the documented defaults).
    defaulted: per row, the names of the features that were filled with a default (unknown entity or a
        missing value).
    """

    frame: pd.DataFrame
    defaults_used: list[bool]
    defaulted: list[list[str]] = field(default_factory=list)


@dataclass
class MaterializeSummary:
    """What `materialize` loaded: the window end and, per feature view, (start, seconds)."""

    end: datetime
    views: dict[str, tuple[datetime, float]]


# ----------------------------------------------------------------------------- construction


def redis_connection_string(url: str) -> str:
    """redis://[:password@]host:port/db (rediss:// for TLS) -> Feast's `host:port,db=N,password=...,ssl=true`."""
    if "://" not in url:
        return url  # already in Feast's form
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise TradecastError(f"features.redis_url: '{url}' must start with redis:// or rediss://")
    parts = [f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}"]
    db = parsed.path.lstrip("/")
    if db:
        parts.append(f"db={int(db)}")
    if parsed.password:
        parts.append(f"password={unquote(parsed.password)}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def repo_config_dict(cfg: FeaturesConfig) -> dict[str, Any]:
    """feature_store.yaml with ${TRADECAST_HOME} filled in and the online store chosen by configs/features.yaml."""
    import yaml

    from tradecast.paths import home

    text = Template((REPO_DIR / "feature_store.yaml").read_text()).safe_substitute(TRADECAST_HOME=str(home()))
    raw = yaml.safe_load(text)
    if cfg.online_store == "redis":
        url = cfg.redis_url or os.environ.get("REDIS_URL") or "redis://localhost:6379/0"
        raw["online_store"] = {"type": "redis", "connection_string": redis_connection_string(url)}
    return raw


def get_store(config: FeaturesConfig | None = None) -> "feast.FeatureStore":
    """A FeatureStore whose registry and SQLite online store live in $TRADECAST_HOME/feast and whose file
    sources resolve under $TRADECAST_HOME/features (both made here, on first call, not at import)."""
    from feast import FeatureStore, RepoConfig

    from tradecast.paths import ensure_dir, feast_dir, feature_data_dir

    cfg = config or load_features_config()
    raw = repo_config_dict(cfg)
    ensure_dir(feast_dir())
    ensure_dir(feature_data_dir())
    store = FeatureStore(repo_path=str(REPO_DIR), config=RepoConfig(**raw, repo_path=feature_data_dir()))
    store._tradecast_config = cfg  # type: ignore[attr-defined]  # windows and TTLs the definitions use
    return store


_DEFAULT_STORES: dict[tuple[str, str], "feast.FeatureStore"] = {}


def default_store() -> "feast.FeatureStore":
    """One cached store per ($TRADECAST_HOME, config) for the serving path."""
    from tradecast.paths import home

    cfg = load_features_config()
    key = (str(home()), cfg.model_dump_json())
    if key not in _DEFAULT_STORES:
        _DEFAULT_STORES[key] = get_store(cfg)
    return _DEFAULT_STORES[key]


def _cfg(store: "feast.FeatureStore") -> FeaturesConfig:
    return getattr(store, "_tradecast_config", None) or load_features_config()


def apply_definitions(store: "feast.FeatureStore | None" = None) -> list[str]:
    """Register entities, sources, feature views, on-demand views and services; returns their names."""
    from features.feature_repo.definitions import build_definitions

    store = store or get_store()
    objects = build_definitions(_cfg(store)).objects()
    store.apply(objects)
    return [o.name for o in objects]


# ----------------------------------------------------------------------------- materialize and defaults


def _utc_datetime(value: datetime | pd.Timestamp | str | None) -> datetime:
    ts = pd.Timestamp(value) if value is not None else pd.Timestamp.now(tz="UTC")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def _source_time_range(view: str) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tradecast.paths import feature_data_dir

    path = feature_data_dir() / f"{view}.parquet"
    if not path.exists():
        return None
    col = pq.read_table(path, columns=["event_timestamp"])["event_timestamp"]
    if len(col) == 0:
        return None
    mm = pc.min_max(col)
    return pd.Timestamp(mm["min"].as_py()), pd.Timestamp(mm["max"].as_py())


def materialize(store: "feast.FeatureStore | None" = None, end: datetime | str | None = None,
                progress: Progress | None = None) -> MaterializeSummary:
    """Load feature rows into the online store, incrementally up to `end` (default now, UTC).

    Each view starts where its previous materialization ended, or at the first row of its source on the first
    run (Feast's own incremental default, now - TTL, would skip historical data). Then the defaults for
    unknown entities are recomputed as of `end`.
    """
    say = progress or (lambda _m: None)
    store = store or get_store()
    end_dt = _utc_datetime(end)
    views: dict[str, tuple[datetime, float]] = {}
    for fv in sorted(store.list_feature_views(), key=lambda v: v.name):
        rng = _source_time_range(fv.name)
        if rng is None:
            say(f"  {fv.name}: no source data, skipped (run `tradecast features apply` after generating data)")
            continue
        if fv.materialization_intervals:
            start = fv.materialization_intervals[-1][1]
        else:
            start = _utc_datetime(rng[0]) - pd.Timedelta(seconds=1).to_pytimedelta()
        if start >= end_dt:
            say(f"  {fv.name}: up to date")
            continue
        t0 = time.perf_counter()
        store.materialize(start_date=start, end_date=end_dt, feature_views=[fv.name])
        views[fv.name] = (start, time.perf_counter() - t0)
        say(f"  {fv.name}: {start:%Y-%m-%d %H:%M} -> {end_dt:%Y-%m-%d %H:%M} in {views[fv.name][1]:.1f}s")
    defaults = compute_defaults(_cfg(store), as_of=end_dt)
    write_defaults(defaults)
    say(f"  defaults for unknown entities: {len(defaults)} features")
    return MaterializeSummary(end=end_dt, views=views)


def compute_defaults(cfg: FeaturesConfig, as_of: datetime | None = None) -> dict[str, Any]:
    """Per feature: 0 for counts, "unknown" for strings, else the median of the rows of the 91 days up to `as_of`."""
    from features.feature_repo.definitions import VIEW_KEYS, is_count_feature, view_feature_fields
    from tradecast.paths import feature_data_dir

    defaults: dict[str, Any] = {}
    for view in VIEW_KEYS:
        fields = [(n, k) for n, k in view_feature_fields(view, cfg) if k != "state"]
        path = feature_data_dir() / f"{view}.parquet"
        recent = None
        if path.exists():
            df = pd.read_parquet(path, columns=["event_timestamp"] + [n for n, k in fields if k == "float"
                                                                      and not is_count_feature(n)])
            # rows of the last 91 days before as_of: typical current values, robust to sparse latest rows
            last = df["event_timestamp"].max()
            if as_of is not None and len(df):
                last = min(last, pd.Timestamp(as_of))
            recent = df[(df["event_timestamp"] <= last) & (df["event_timestamp"] > last - pd.Timedelta(days=91))]
        for name, kind in fields:
            if kind == "str":
                defaults[name] = "unknown"
            elif is_count_feature(name):
                defaults[name] = 0.0
            else:
                value = recent[name].median() if recent is not None and len(recent) else np.nan
                defaults[name] = None if pd.isna(value) else float(value)
    return defaults


def write_defaults(defaults: dict[str, Any]) -> Path:
    from tradecast.paths import ensure_dir, feast_dir

    path = ensure_dir(feast_dir()) / DEFAULTS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(defaults, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


_DEFAULTS_CACHE: dict[str, tuple[float, dict[str, Any]]] = {}


def load_defaults(cfg: FeaturesConfig | None = None) -> dict[str, Any]:
    """The stored defaults (cached until the file changes); computed from the sources if not materialized yet."""
    from tradecast.paths import feast_dir

    path = feast_dir() / DEFAULTS_FILE
    if not path.exists():
        return compute_defaults(cfg or load_features_config())
    mtime = path.stat().st_mtime
    cached = _DEFAULTS_CACHE.get(str(path))
    if cached is None or cached[0] != mtime:
        cached = (mtime, json.loads(path.read_text()))
        _DEFAULTS_CACHE[str(path)] = cached
    return cached[1]


# ----------------------------------------------------------------------------- services


def _check_service(service_name: str) -> None:
    from features.feature_repo.definitions import SERVICES

    if service_name not in SERVICES:
        raise TradecastError(f"unknown feature service '{service_name}': choose one of {', '.join(SERVICES)}")


def feature_names(service_name: str, config: FeaturesConfig | None = None) -> list[str]:
    """Model input columns of a feature service, in order: batch features, then request-time features."""
    from features.feature_repo.definitions import SERVICES, service_batch_features
    from features.on_demand import ON_DEMAND_OUTPUTS

    _check_service(service_name)
    cfg = config or load_features_config()
    names = [f for _, f in service_batch_features(service_name, cfg)]
    for odfv in SERVICES[service_name][1]:
        names += ON_DEMAND_OUTPUTS[odfv]
    return names


def join_keys(service_name: str) -> list[str]:
    """Entity columns a service needs (in the entity frame or the online entity rows)."""
    from features.feature_repo.definitions import SERVICES

    _check_service(service_name)
    return list(dict.fromkeys(JOIN_KEY_OF_VIEW[v] for v in SERVICES[service_name][0]))


def request_fields(service_name: str) -> list[str]:
    """Request-time columns a service's on-demand features read (the caller supplies them)."""
    from features.feature_repo.definitions import REQUEST_FIELDS, SERVICES

    _check_service(service_name)
    return [n for o in SERVICES[service_name][1] for n, _ in REQUEST_FIELDS[o]]


def _fill_column(values: Sequence[Any] | np.ndarray, kind: str, default: Any) -> tuple[np.ndarray, np.ndarray]:
    """A feature column as numpy (float64 or object) with missing values set to `default`; and the missing mask."""
    if kind == "str":
        arr = np.asarray(values, dtype=object)
        missing = np.array([v is None or v is pd.NA or (isinstance(v, float) and v != v) for v in arr], dtype=bool)
        if default is not None and missing.any():
            arr = arr.copy()
            arr[missing] = default
        return arr, missing
    if isinstance(values, np.ndarray) and values.dtype == np.float64:
        arr = values.copy()
    elif isinstance(values, list) and all(v is None or isinstance(v, (int, float)) for v in values):
        arr = np.array([np.nan if v is None else v for v in values], dtype="float64")
    else:
        arr = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    missing = np.isnan(arr)
    if default is not None and missing.any():
        arr[missing] = default
    return arr, missing


def _float_matrix(columns: list[Any], n: int) -> np.ndarray:
    """Rows x columns float64 matrix from columns given as lists (None = missing) or arrays."""
    if not columns:
        return np.empty((n, 0))
    try:
        return np.array([np.asarray(c, dtype=np.float64) if isinstance(c, np.ndarray) else c for c in columns],
                        dtype=np.float64).T.copy()
    except (TypeError, ValueError):  # e.g. pandas NA or text in a numeric column
        return np.column_stack([_fill_column(c, "float", None)[0] for c in columns])


def _fill_and_derive_columns(service_name: str, batch: dict[str, Any], kinds: dict[str, str], extra: dict[str, Any],
                             defaults: dict[str, Any] | None, names: list[str],
                             n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Fill missing batch features with defaults, then add the request-time features.

    batch: feature -> column values; extra: join keys and request columns. Returns (feature -> array, in
    `names` order: float64, object for text features; boolean matrix rows x batch features (in `batch` order)
    of the values that were missing). No DataFrame: the serving path calls this per request.
    """
    from features.feature_repo.definitions import SERVICES
    from features.on_demand import ON_DEMAND_FUNCTIONS, ON_DEMAND_INPUTS

    defaults = defaults or {}
    batch_names = list(batch)
    float_names = [c for c in batch_names if kinds[c] != "str"]
    str_names = [c for c in batch_names if kinds[c] == "str"]
    floats = _float_matrix([batch[c] for c in float_names], n)
    missing_f = np.isnan(floats)
    fill = np.array([np.nan if defaults.get(c) is None else defaults[c] for c in float_names], dtype=np.float64)
    floats = np.where(missing_f, fill, floats)
    cols: dict[str, np.ndarray] = {c: floats[:, j] for j, c in enumerate(float_names)}
    missing_s: dict[str, np.ndarray] = {}
    for c in str_names:
        cols[c], missing_s[c] = _fill_column(batch[c], "str", defaults.get(c))
    for odfv in SERVICES[service_name][1]:
        inputs = {c: cols[c] if c in cols else np.asarray(extra[c]) for c in ON_DEMAND_INPUTS[odfv]
                  if c in cols or c in extra}
        if not inputs:  # the functions need the row count: give them one column of NaN
            inputs = {"_rows": np.full(n, np.nan)}
        cols.update(ON_DEMAND_FUNCTIONS[odfv](inputs))
    missing = np.zeros((n, len(batch_names)), dtype=bool)
    for j, c in enumerate(batch_names):
        missing[:, j] = missing_s[c] if c in missing_s else missing_f[:, float_names.index(c)]
    return {c: cols[c] for c in names}, missing


def _fill_and_derive(service_name: str, batch: dict[str, Any], kinds: dict[str, str], extra: dict[str, Any],
                     defaults: dict[str, Any] | None, names: list[str], n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """`_fill_and_derive_columns` as a frame in `names` order (one float block, text columns inserted)."""
    cols, missing = _fill_and_derive_columns(service_name, batch, kinds, extra, defaults, names, n)
    str_names = [c for c in batch if kinds[c] == "str"]
    float_out = [c for c in names if c not in str_names]
    block = np.column_stack([cols[c] for c in float_out]) if float_out else np.empty((n, 0))
    frame = pd.DataFrame(block, columns=float_out, index=pd.RangeIndex(n), copy=False)
    for c in str_names:
        frame.insert(names.index(c), c, cols[c])
    return frame, missing


def _kinds(service_name: str, cfg: FeaturesConfig) -> dict[str, str]:
    from features.feature_repo.definitions import SERVICES, view_feature_fields

    return {n: k for v in SERVICES[service_name][0] for n, k in view_feature_fields(v, cfg)}


# ----------------------------------------------------------------------------- training


def check_entity_frame(service_name: str, entity_df: pd.DataFrame, cfg: Any) -> list[str]:
    """The service's join keys, after checking `entity_df` has them and `event_timestamp` and no feature column."""
    keys = join_keys(service_name)
    missing = [c for c in keys + ["event_timestamp"] if c not in entity_df.columns]
    if missing:
        raise TradecastError(f"entity frame for '{service_name}' is missing column(s): {', '.join(missing)}")
    names = feature_names(service_name, cfg)
    clash = [c for c in entity_df.columns if c in names]
    if clash:
        raise TradecastError(f"entity frame for '{service_name}' already has feature column(s): {', '.join(clash)}")
    return keys


def training_frame(service_name: str, entity_df: pd.DataFrame, store: "feast.FeatureStore | None" = None,
                   fill_defaults: bool = True) -> pd.DataFrame:
    """Point-in-time training set: `entity_df` (join keys, `event_timestamp`, labels, request columns) with the
    service's features appended under their plain names, in `feature_names(service_name)` order, same row order.

    Batch features come from Feast's get_historical_features (latest row <= event_timestamp within the TTL);
    missing values take the documented defaults (fill_defaults=True, as online); request-time features are
    computed from the entity frame's request columns (`request_fields(service_name)`, NaN when absent).
    """
    from features.feature_repo.definitions import service_batch_features

    store = store or get_store()
    cfg = _cfg(store)
    keys = check_entity_frame(service_name, entity_df, cfg)
    names = feature_names(service_name, cfg)
    pairs = service_batch_features(service_name, cfg)
    edf = pd.DataFrame({k: entity_df[k].astype("object").where(entity_df[k].notna(), "").astype(str).to_numpy()
                        for k in keys})
    ts = pd.to_datetime(entity_df["event_timestamp"]).reset_index(drop=True)
    edf["event_timestamp"] = (ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")).astype(
        "datetime64[ns, UTC]")
    parts = []
    for view in dict.fromkeys(v for v, _ in pairs):
        parts.append(_historical_view(store, view, [f for v, f in pairs if v == view], edf))
    batch = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=edf.index)
    extra = {k: edf[k].to_numpy() for k in keys}
    extra.update({c: entity_df[c].to_numpy() for c in request_fields(service_name) if c in entity_df.columns})
    defaults = load_defaults(cfg) if fill_defaults else None
    frame, _ = _fill_and_derive(service_name, {c: batch[c].to_numpy() for c in batch.columns}, _kinds(service_name, cfg),
                                extra, defaults, names, len(edf))
    frame.index = entity_df.index
    return pd.concat([entity_df, frame], axis=1)


def _chunk_store(store: "feast.FeatureStore", repo_path: Path) -> "feast.FeatureStore":
    """A store with the same registry and config whose file sources resolve under `repo_path`."""
    from feast import FeatureStore, RepoConfig

    cfg = _cfg(store)
    chunk = FeatureStore(repo_path=str(REPO_DIR), config=RepoConfig(**repo_config_dict(cfg), repo_path=repo_path))
    chunk._tradecast_config = cfg  # type: ignore[attr-defined]
    return chunk


def _historical_view(store: "feast.FeatureStore", view: str, features: list[str], edf: pd.DataFrame) -> pd.DataFrame:
    """One view's point-in-time features for every row of `edf` (join keys + UTC event_timestamp).

    Feast's get_historical_features does the join, with two arrangements around its file (dask) offline store:
    - it is asked with the unique (key, timestamp) pairs and the answer is merged back, because the store merges
      entity rows sharing key and timestamp, and drops an entity row from the whole answer when the entity has
      rows but none inside (event_timestamp - TTL, event_timestamp] (per view, that pair is simply null: TTL);
    - the pairs go in time chunks, each against a slice of the source holding only the chunk's keys and rows
      stamped in (chunk start - TTL, chunk end]: the store merges every entity row with every source row of its
      entity before filtering, so on a full source a daily view costs (examples x days of history). Rows outside
      the slice can never be joined (older than the TTL or later than the event), so the answer is the same.
    """
    import tempfile

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tradecast.paths import ensure_dir, feast_dir, feature_data_dir

    key = JOIN_KEY_OF_VIEW[view]
    pairs = edf[[key, "event_timestamp"]].drop_duplicates().sort_values("event_timestamp").reset_index(drop=True)
    empty = pd.DataFrame(columns=[key, "event_timestamp", *features])
    path = feature_data_dir() / f"{view}.parquet"
    if not len(pairs):
        hist = empty
    elif not path.exists():
        raise TradecastError(f"feature source '{view}' is missing ({path}); run `tradecast features apply` first")
    else:
        ttl = store.get_feature_view(view).ttl or pd.Timedelta(0).to_pytimedelta()
        ttl_ns = int(pd.Timedelta(ttl).value)
        span = max(pd.Timedelta(ttl), pd.Timedelta(days=28))
        source = pq.read_table(path, columns=[key, "event_timestamp", *features])
        src_ns = pc.cast(source["event_timestamp"], pa.timestamp("ns", "UTC")).cast(pa.int64())
        ts = pairs["event_timestamp"]
        chunk_id = ((ts - ts.iloc[0]) // span).to_numpy()
        answers = []
        with tempfile.TemporaryDirectory(prefix="pit-", dir=ensure_dir(feast_dir())) as tmp:
            for cid in np.unique(chunk_id):
                part = pairs[chunk_id == cid]
                lo = part["event_timestamp"].iloc[0].value - ttl_ns if ttl_ns else np.iinfo(np.int64).min
                hi = part["event_timestamp"].iloc[-1].value
                mask = pc.and_(pc.and_(pc.greater_equal(src_ns, lo), pc.less_equal(src_ns, hi)),
                               pc.is_in(source[key], value_set=pa.array(part[key].unique(), pa.string())))
                sliced = source.filter(mask)
                if sliced.num_rows == 0:
                    continue
                folder = Path(tmp) / f"chunk{int(cid)}"
                folder.mkdir()
                pq.write_table(sliced, folder / f"{view}.parquet")
                hist = _chunk_store(store, folder).get_historical_features(
                    entity_df=part.reset_index(drop=True), features=[f"{view}:{f}" for f in features],
                    full_feature_names=False).to_df()
                answers.append(hist[[key, "event_timestamp", *features]])
        hist = pd.concat(answers, ignore_index=True) if answers else empty
        hist["event_timestamp"] = pd.to_datetime(hist["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
        hist = hist.drop_duplicates([key, "event_timestamp"], keep="last")
    hist = hist.astype({"event_timestamp": "datetime64[ns, UTC]"})
    merged = edf[[key, "event_timestamp"]].merge(hist, on=[key, "event_timestamp"], how="left", validate="many_to_one")
    return merged[features].reset_index(drop=True)


def _as_utc_naive(ts: pd.Series) -> pd.Series:
    ts = pd.to_datetime(ts)
    return ts.dt.tz_convert("UTC").dt.tz_localize(None) if ts.dt.tz is not None else ts


def demand_entities(daily_sales: pd.DataFrame, horizons: Sequence[int] = (1, 7, 14, 28), origins: Iterable | None = None,
                    as_of: datetime | str | None = None, frequency: str = "D") -> pd.DataFrame:
    """(series, origin, horizon) examples for demand_v1.

    For each origin O (midnight; default every 7th period of the data) and horizon h (periods), the target is
    O + (h-1) periods. Columns: series_id, sku_id, market, event_timestamp (= O, features see sales before O),
    origin_date, target_date, horizon, label `units` and `stock_out` at the target (censored when stock_out),
    and the known-future covariates of the target day as request columns: price, discount, promotion_event,
    is_promotion, live_sessions, target_dow / target_month / target_dayofyear. Only targets whose day is complete
    by `as_of` are kept.
    """
    from features.on_demand import calendar_columns

    step = pd.Timedelta(days=7 if frequency == "W" else 1)
    ds = daily_sales.copy()
    ds["date"] = _as_utc_naive(ds["date"]).dt.normalize()
    dates = np.sort(ds["date"].unique())
    origin_set = pd.DatetimeIndex(pd.to_datetime(list(origins))).normalize() if origins is not None else \
        pd.DatetimeIndex(dates[::7])
    parts = []
    for h in horizons:
        if h < 1:
            raise TradecastError(f"horizons: {h} is not a positive number of periods")
        origin = ds["date"] - (h - 1) * step
        keep = origin.isin(origin_set)
        part = ds.loc[keep].copy()
        part["origin_date"] = origin[keep]
        part["horizon"] = h
        parts.append(part)
    ex = pd.concat(parts, ignore_index=True) if parts else ds.iloc[:0].assign(origin_date=ds["date"], horizon=1)
    ex = ex.rename(columns={"date": "target_date"})
    if as_of is not None:
        cutoff = pd.Timestamp(_utc_datetime(as_of)).tz_localize(None)
        ex = ex[ex["target_date"] + step <= cutoff]
    ex["series_id"] = ex["sku_id"].astype(str) + "|" + ex["market"].astype(str)
    ex["event_timestamp"] = ex["origin_date"]
    if "promotion_event" in ex:
        ex["is_promotion"] = (ex["promotion_event"].notna() & (ex["promotion_event"].astype(str) != "")).astype(float)
    else:
        ex["is_promotion"] = 0.0
    for c in ("price", "discount", "live_sessions"):
        ex[c] = pd.to_numeric(ex[c], errors="coerce").astype(float) if c in ex else np.nan
    ex = pd.concat([ex.reset_index(drop=True), calendar_columns(ex["target_date"].reset_index(drop=True))], axis=1)
    cols = ["series_id", "sku_id", "market", "event_timestamp", "origin_date", "target_date", "horizon", "units",
            "stock_out", "price", "discount", "promotion_event", "is_promotion", "live_sessions", "target_dow",
            "target_month", "target_dayofyear"]
    return ex[[c for c in cols if c in ex.columns]].sort_values(["event_timestamp", "series_id", "horizon"]).reset_index(drop=True)


def delay_entities(shipments: pd.DataFrame, as_of: datetime | str | None = None) -> pd.DataFrame:
    """Delivered shipments (outcome known by `as_of`) as delay_v1 examples stamped at created_at.

    Columns: the shipment's own columns, lane_mode, category ('unknown' when null), event_timestamp, and labels
    transit_days, late, clearance_hours, delay_hours (= max(0, transit - promised) * 24).
    """
    sh = shipments.copy()
    sh["delivered_at"] = _as_utc_naive(sh["delivered_at"])
    known = sh["delivered_at"].notna() & sh["transit_days"].notna()
    if as_of is not None:
        known &= sh["delivered_at"] <= pd.Timestamp(_utc_datetime(as_of)).tz_localize(None)
    sh = sh[known].copy()
    sh["lane_mode"] = sh["lane"].astype(str) + "|" + sh["mode"].astype(str)
    sh["category"] = sh["category"].astype("object").where(sh["category"].notna(), "unknown") if "category" in sh else "unknown"
    sh["event_timestamp"] = _as_utc_naive(sh["created_at"])
    sh["delay_hours"] = ((sh["transit_days"] - sh["promised_days"]).clip(lower=0) * 24.0).astype(float)
    return sh.sort_values("event_timestamp").reset_index(drop=True)


def risk_entities(orders: pd.DataFrame, as_of: datetime | str | None = None, label: str = "fraud") -> pd.DataFrame:
    """Orders whose `label` ("fraud" or "compliance") is known by `as_of` (default: the last order time).

    Positive if the label was reported by as_of; negative only once FRAUD_LABEL_WINDOW_DAYS have passed since
    the order without a report; other orders are dropped (their label may still arrive). Columns: the order's
    columns, event_timestamp (= ordered_at), order_category, account_age_days, device_id/ip ('' when null) and
    `label` (0/1).
    """
    from features.schema import FRAUD_LABEL_WINDOW_DAYS

    if label not in ("fraud", "compliance"):
        raise TradecastError(f"label: '{label}' must be 'fraud' or 'compliance'")
    flag, reported = ("is_fraud", "fraud_reported_at") if label == "fraud" else ("is_compliance_issue", "compliance_reported_at")
    od = orders.copy()
    od["ordered_at"] = _as_utc_naive(od["ordered_at"])
    cutoff = pd.Timestamp(_utc_datetime(as_of)).tz_localize(None) if as_of is not None else od["ordered_at"].max()
    rep = _as_utc_naive(od[reported]) if reported in od else pd.Series(pd.NaT, index=od.index)
    is_pos = od[flag].astype("boolean").fillna(False).astype(bool) if flag in od else pd.Series(False, index=od.index)
    positive = is_pos & rep.notna() & (rep <= cutoff)
    negative = ~positive & (od["ordered_at"] + pd.Timedelta(days=FRAUD_LABEL_WINDOW_DAYS) <= cutoff)
    od = od[positive | negative].copy()
    od["label"] = positive[positive | negative].astype(int).to_numpy()
    od = od[od["ordered_at"] <= cutoff]
    od["event_timestamp"] = od["ordered_at"]
    od["order_category"] = od["category"] if "category" in od else None
    od["category"] = od["category"].astype("object").where(od["category"].notna(), "unknown") if "category" in od else "unknown"
    for c in ("device_id", "ip"):
        od[c] = od[c].astype("object").where(od[c].notna(), "") if c in od else ""
    created = _as_utc_naive(od["account_created_at"]) if "account_created_at" in od else pd.Series(pd.NaT, index=od.index)
    od["account_age_days"] = ((od["ordered_at"] - created) / pd.Timedelta(days=1)).astype(float)
    return od.sort_values("event_timestamp").reset_index(drop=True)


# ----------------------------------------------------------------------------- online


@dataclass
class _OnlinePlan:
    refs: list[str]
    batch_names: list[str]
    kinds: dict[str, str]
    view_columns: list[np.ndarray]  # per view, the positions of its features in batch_names
    keys: list[str]
    names: list[str]
    request: list[str]
    views: list[tuple[str, str, list[str]]]  # (view, join key, features) for OnlineTables reads


_PLANS: dict[tuple[int, str], _OnlinePlan] = {}


def _plan(store: "feast.FeatureStore", service_name: str) -> _OnlinePlan:
    from features.feature_repo.definitions import service_batch_features

    key = (id(store), service_name)
    if key not in _PLANS:
        cfg = _cfg(store)
        pairs = service_batch_features(service_name, cfg)
        views = list(dict.fromkeys(v for v, _ in pairs))
        _PLANS[key] = _OnlinePlan(
            refs=[f"{v}:{f}" for v, f in pairs], batch_names=[f for _, f in pairs], kinds=_kinds(service_name, cfg),
            view_columns=[np.array([i for i, (v2, _) in enumerate(pairs) if v2 == v]) for v in views],
            keys=join_keys(service_name), names=feature_names(service_name, cfg), request=request_fields(service_name),
            views=[(v, JOIN_KEY_OF_VIEW[v], [f for v2, f in pairs if v2 == v]) for v in views])
    return _PLANS[key]


def online_features(service_name: str, entities: list[dict[str, Any]] | pd.DataFrame,
                    request_data: dict[str, Any] | pd.DataFrame | None = None,
                    store: "feast.FeatureStore | None" = None, tables: "OnlineTables | None" = None) -> OnlineResult:
    """Feature vectors for serving: the service's features for each entity row, same names/order as training.

    `entities`: rows (dicts or a DataFrame) holding the service's join keys (`join_keys(service_name)`; a missing
    key counts as unknown) and optionally request fields (`request_fields(service_name)`). `request_data`:
    request fields as a dict of column -> scalar (all rows) or list (one per row), or a DataFrame; it wins over
    the same field in `entities`. Unknown entities get the documented defaults and defaults_used=True.
    `tables` (features.online.OnlineTables of the store): read the online store directly with the views
    resolved once (the serving path) instead of through `FeatureStore.get_online_features`; same values.
    """
    _check_service(service_name)
    store = tables.store if tables is not None else (store or default_store())
    plan = _plan(store, service_name)
    # the columns this service reads, as lists (a frame's columns directly: to_dict("records") costs more
    # than the online read for a single request)
    wanted = (*plan.keys, *plan.request)
    if isinstance(entities, pd.DataFrame):
        n = len(entities)
        given = {c: entities[c].tolist() for c in wanted if c in entities.columns}
    else:
        records = list(entities)
        n = len(records)
        given = {c: [r.get(c) for r in records] for c in wanted if any(c in r for r in records)}
    if n == 0:
        return OnlineResult(pd.DataFrame(columns=plan.names), [], [])
    batch, extra = _read_online(store, plan, given, n, tables)
    if request_data is not None:
        items = request_data.items() if not isinstance(request_data, pd.DataFrame) else \
            ((c, request_data[c].tolist()) for c in request_data.columns)
        for c, v in items:
            extra[c] = list(v) if isinstance(v, (list, tuple, np.ndarray, pd.Series)) else [v] * n
    frame, missing = _fill_and_derive(service_name, batch, plan.kinds, extra, load_defaults(_cfg(store)),
                                      plan.names, n)
    unknown = _unknown_rows(plan, missing, n)
    names = np.array(plan.batch_names)
    return OnlineResult(frame=frame, defaults_used=unknown.tolist(), defaulted=[names[row].tolist() for row in missing])


def online_feature_columns(service_name: str, columns: dict[str, Sequence[Any]], tables: "OnlineTables",
                           known: dict[str, dict[str, dict[str, Any]]] | None = None
                           ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`online_features` for the request path: join keys and request fields as column -> values (one per row)
    in, (feature -> array in `feature_names` order, defaults_used per row) out, with no DataFrame on the way.
    Same reads, defaults and on-demand functions, so the same values (tested against `online_features`).
    `known`: view -> entity id -> row just written by this caller (`OnlineTables.recording_writes`), used
    instead of reading those rows back."""
    from features.on_demand import n_rows

    plan = _plan(tables.store, service_name)
    n = n_rows(columns)
    given = {c: columns[c] for c in (*plan.keys, *plan.request) if c in columns}
    batch, extra = _read_online(tables.store, plan, given, n, tables, known)
    values, missing = _fill_and_derive_columns(service_name, batch, plan.kinds, extra,
                                               load_defaults(_cfg(tables.store)), plan.names, n)
    return values, _unknown_rows(plan, missing, n)


def _read_online(store: "feast.FeatureStore", plan: _OnlinePlan, given: dict[str, Sequence[Any]], n: int,
                 tables: "OnlineTables | None", known: dict[str, dict[str, dict[str, Any]]] | None = None
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(batch feature -> values read from the online store, join keys and request fields) for n rows."""
    key_cols = {k: ["" if v is None else str(v) for v in given.get(k, [None] * n)] for k in plan.keys}
    if tables is None:
        data = store.get_online_features(features=plan.refs, entity_rows=key_cols).to_dict()
    else:
        data = {}
        for view, key, names in plan.views:
            data.update(tables.read(view, key, key_cols[key], names, known=(known or {}).get(view)))
    extra: dict[str, Any] = dict(key_cols)
    for c in plan.request:
        if c in given:
            extra[c] = given[c]
    return {f: data[f] for f in plan.batch_names}, extra


def _unknown_rows(plan: _OnlinePlan, missing: np.ndarray, n: int) -> np.ndarray:
    """Per row: some view of the row knew none of its features (an unknown entity: defaults used)."""
    unknown = np.zeros(n, dtype=bool)
    for cols in plan.view_columns:
        unknown |= missing[:, cols].all(axis=1)
    return unknown


def parse_recent_orders(text: str | None) -> list[tuple[int, float]]:
    """The activity state string "epoch_seconds:amount;..." as (seconds, amount) pairs."""
    if not text:
        return []
    pairs = (item.split(":") for item in text.split(";") if item)
    return [(int(float(t)), float(a)) for t, a in pairs]


def format_recent_orders(pairs: list[tuple[int, float]]) -> str:
    """(seconds, amount) pairs as the activity state string (inverse of parse_recent_orders)."""
    return ";".join(f"{int(t)}:{a:.4f}" for t, a in pairs)


# Serving keeps at most this many of an entity's last-24-h orders in its activity state, so a single hot buyer,
# device or IP (a bot, a brushing run) cannot make each request read, parse and write an ever longer row. Its
# 1 h / 24 h counts then saturate here (training counts are exact; fraud bursts in the data are tens of orders).
MAX_RECENT_ORDERS = 1000


def _order_columns(orders: pd.DataFrame | dict[str, Any] | list[dict[str, Any]]) -> dict[str, Sequence[Any]]:
    """Orders as column -> values: a frame's columns, a dict of columns, one order (a dict of scalars) or a list
    of order dicts."""
    if isinstance(orders, pd.DataFrame):
        return {c: orders[c].to_numpy() for c in orders.columns}
    if isinstance(orders, dict):
        if all(isinstance(v, (list, tuple, np.ndarray, pd.Series)) for v in orders.values()):
            return {c: v if isinstance(v, np.ndarray) else list(v) for c, v in orders.items()}
        return {c: [v] for c, v in orders.items()}
    records = list(orders)
    names = list(dict.fromkeys(c for r in records for c in r))
    return {c: [r.get(c) for r in records] for c in names}


def _epoch_seconds(times: Sequence[Any]) -> list[int]:
    """Whole seconds since the epoch (UTC; naive times are UTC) of datetimes, timestamps or ISO strings."""
    if isinstance(times, np.ndarray) and times.dtype.kind == "M":  # naive UTC already (the serving rows)
        return times.astype("datetime64[s]").astype(np.int64).tolist()
    return (pd.to_datetime(pd.Series(list(times)), utc=True).astype("int64") // 10**9).astype(int).tolist()


def push_order_velocity(store: "feast.FeatureStore | None", orders: pd.DataFrame | dict[str, Any] | list[dict[str, Any]],
                        tables: "OnlineTables | None" = None) -> int:
    """Update the buyer/device/IP activity rows in the online store with newly arrived orders.

    Each order needs ordered_at and amount, plus buyer_id / device_id / ip (a missing key skips that entity) and
    optionally ip_country / card_country / shipping_country. The new row of an entity holds its state after the
    orders: velocity over the last hour and day counted exactly from the stored recent order times, totals,
    running mean amount and mismatch share; chargebacks are unchanged. Returns the number of entity rows pushed.
    Without `tables` it reads with `get_online_features` and writes with Feast's `push` (to the push sources);
    with `tables` (features.online.OnlineTables) it reads and writes the same rows through the online store
    directly (the serving path).
    """
    from feast.data_source import PushMode

    from features.compute import ACTIVITY_KEYS, country_mismatch
    from features.feature_repo.definitions import PUSH_VIEWS, activity_state_fields, view_feature_fields
    from features.on_demand import n_rows

    store = tables.store if tables is not None else (store or default_store())
    cfg = _cfg(store)
    od = _order_columns(orders)
    if not n_rows(od):
        return 0
    for c in ("ordered_at", "amount"):
        if c not in od:
            raise TradecastError(f"push_order_velocity: order is missing '{c}'")
    seconds = _epoch_seconds(od["ordered_at"])
    amounts = [float(a) for a in od["amount"]]
    mismatch = np.nan_to_num(country_mismatch(od), nan=0.0).tolist()
    pushed = 0
    for view, (key, prefix) in ACTIVITY_KEYS.items():
        if key not in od:
            continue
        # this entity's new orders in time order: (seconds, amount, mismatch)
        new_by_entity: dict[str, list[tuple[int, float, float]]] = {}
        for entity, sec, amount, mism in zip(list(od[key]), seconds, amounts, mismatch):
            if entity is None or (isinstance(entity, float) and entity != entity) or str(entity) == "":
                continue
            new_by_entity.setdefault(str(entity), []).append((sec, amount, mism))
        if not new_by_entity:
            continue
        names = [n for n, _ in view_feature_fields(view, cfg)]
        ids = list(new_by_entity)
        if tables is None:
            current = store.get_online_features(features=[f"{view}:{n}" for n in names],
                                                entity_rows=[{key: i} for i in ids]).to_dict()
        else:
            current = tables.read(view, key, ids, names)
        (state_col,) = activity_state_fields(view)
        out_rows = []
        for i, entity in enumerate(ids):
            new = sorted(new_by_entity[entity])
            recent = parse_recent_orders(current[state_col][i])
            total = current[f"{prefix}_orders_total"][i] or 0.0
            mean = current[f"{prefix}_amount_mean"][i] or 0.0
            mism = current[f"{prefix}_mismatch_share"][i] or 0.0
            now = max(t for t, _, _ in new)
            recent += [(t, a) for t, a, _ in new]
            recent = [(t, a) for t, a in recent if now - 86400 < t <= now]
            if len(recent) > MAX_RECENT_ORDERS:  # one hot key must not grow every later read and write
                recent = sorted(recent)[-MAX_RECENT_ORDERS:]
            k = len(new)
            out_rows.append({
                key: entity, "event_timestamp": datetime.fromtimestamp(now, tz=timezone.utc),
                f"{prefix}_orders_1h": float(sum(1 for t, _ in recent if t > now - 3600)),
                f"{prefix}_orders_24h": float(len(recent)),
                f"{prefix}_amount_24h": float(sum(a for _, a in recent)),
                f"{prefix}_orders_total": float(total + k),
                f"{prefix}_amount_mean": float((mean * total + sum(a for _, a, _ in new)) / (total + k)),
                f"{prefix}_chargebacks_known": float(current[f"{prefix}_chargebacks_known"][i] or 0.0),
                f"{prefix}_mismatch_share": float((mism * total + sum(m for _, _, m in new)) / (total + k)),
                state_col: format_recent_orders(recent),
            })
        if tables is None:
            store.push(PUSH_VIEWS[view], pd.DataFrame(out_rows), to=PushMode.ONLINE)
        else:
            tables.write(view, key, [(r[key], {n: r[n] for n in names}, r["event_timestamp"]) for r in out_rows])
        pushed += len(out_rows)
    return pushed
