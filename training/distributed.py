"""Distributed feature computation and LightGBM training on Dask, for data that outgrows one process.

Nothing here is a home-made cluster: work runs on an existing Dask cluster (`DASK_SCHEDULER`, e.g.
tcp://scheduler:8786, set directly or by the `shared` profile) or, when none is given, on a `LocalCluster` of
`TRADECAST_DASK_WORKERS` processes (default 2) on this machine.

- `training_cluster()`: wraps a training pipeline (training.pipeline.train_family). When `dask_enabled()`
  ($TRADECAST_DASK, or $DASK_SCHEDULER set) it opens a client that is also dask's default scheduler, so Feast's
  file offline store (built on dask.dataframe) runs the point-in-time training-set joins on the cluster (with a
  family's `feature_join: feast`; the default `asof` join is pandas in this process), and `active_client()`
  makes the demand and risk families train their LightGBM through lightgbm.dask.
- `demand_series_dask`: the demand feature view (features.compute.compute_demand_series, the very same
  function) computed over partitions of whole series with dask.dataframe, so no process holds the full
  periods x series matrix. Rows are identical to the single-process computation.
- `DaskLGBMQuantileRegressor`: training.estimators.LGBMQuantileRegressor trained through `lightgbm.dask`
  (data-parallel LightGBM across the workers). `.to_local()` returns a plain LGBMQuantileRegressor, so the
  packaged model, MLflow logging and serving need no Dask.
- `DaskLGBMCalibratedClassifier`: training.estimators.LGBMCalibratedClassifier (the risk family's P(fraud) and
  P(compliance) model) whose booster is trained by `lightgbm.dask.DaskLGBMClassifier`; the class weighting
  (sqrt(neg/pos)), monotone constraints, time-ordered calibration slice and Platt calibration are the parent's
  own code (only `_fit_booster` differs; calibration runs in this process on the calibration slice).
  `.to_local()` returns a plain LGBMCalibratedClassifier; training.risk packages that.
- `demand_training_frame(...)`: demand examples with point-in-time features without the Feast file join (for
  data beyond it), features computed on Dask when a client is given.
- `fit_demand(frame, numeric, categorical, config, client=None)`: the demand pipeline's estimator (same
  params, quantiles, monotone constraints, log target as training/demand.py), local or on Dask.
- `fit_risk(frame, label, numeric, categorical, config, client=None)`: the risk pipeline's classifier for
  `is_fraud_label` or `is_compliance_label` (settings of training/risk.py RiskFamily._lgbm), local or on Dask.
- `agreement(...)` / `risk_agreement(...)`: how close a Dask-trained model is to the single-process one on the
  same rows; `within_tolerance` / `risk_within_tolerance` check it against the tolerances below.

Tolerance (measured in tests/test_scaleout_dask.py and experiments/bench_scaleout.py): data-parallel LightGBM
builds its histogram bins from each worker's share of the rows and sums histograms across workers, so trees
differ slightly from single-process trees.
- demand: |accuracy difference| <= DEMAND_TOLERANCE["accuracy"] (absolute, accuracy = 1 - WAPE) and the P50
  forecasts correlate >= DEMAND_TOLERANCE["p50_correlation"].
- risk, on a later holdout, per label: |PR-AUC difference| <= RISK_TOLERANCE["pr_auc"], |recall at the 3%
  false-alarm rate difference| <= RISK_TOLERANCE["recall_at_fa"] (both absolute) and the calibrated
  probabilities correlate (Pearson) >= RISK_TOLERANCE["p_correlation"]. Recall at 3% false alarms moves in steps
  of 1/positives, so the holdout needs a few hundred positives for the bound to mean something.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Iterator

import numpy as np
import pandas as pd

from training.estimators import (LGBMCalibratedClassifier, LGBMQuantileRegressor, _monotone_vector, encode_frame,
                                 fit_categories, lgbm_params)
from tradecast.errors import TradecastError

DEMAND_TOLERANCE = {"accuracy": 0.02, "p50_correlation": 0.97}
RISK_TOLERANCE = {"pr_auc": 0.03, "recall_at_fa": 0.05, "p_correlation": 0.93}
RISK_LABELS = ("is_fraud_label", "is_compliance_label")
_PAD_SERIES_SKU = "__dask_pad__"


# ----------------------------------------------------------------------------- cluster


def scheduler_address() -> str | None:
    """$DASK_SCHEDULER (an existing cluster), or None for a LocalCluster."""
    return os.environ.get("DASK_SCHEDULER", "").strip() or None


def local_workers() -> int:
    """Processes of the LocalCluster: $TRADECAST_DASK_WORKERS, default 2."""
    raw = os.environ.get("TRADECAST_DASK_WORKERS", "2").strip() or "2"
    try:
        n = int(raw)
    except ValueError:
        raise TradecastError(f"TRADECAST_DASK_WORKERS: '{raw}' is not a whole number") from None
    if not 1 <= n <= 256:
        raise TradecastError(f"TRADECAST_DASK_WORKERS: {n} must be between 1 and 256")
    return n


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None, threads_per_worker: int = 1,
                timeout_s: float = 60.0) -> Iterator[Any]:
    """A distributed.Client on `scheduler` (default $DASK_SCHEDULER) or on a LocalCluster of `workers`
    processes (default $TRADECAST_DASK_WORKERS), closed (and the local cluster shut down) on exit."""
    from distributed import Client, LocalCluster

    address = scheduler or scheduler_address()
    if address:
        try:
            client = Client(address, timeout=timeout_s)
        except OSError as exc:
            raise TradecastError(f"DASK_SCHEDULER: cannot reach the Dask scheduler at {address}: {exc}") from exc
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(n_workers=workers or local_workers(), threads_per_worker=threads_per_worker,
                           processes=True, dashboard_address=":0", host="127.0.0.1", memory_limit=0,
                           silence_logs=40)
    client = Client(cluster, timeout=timeout_s)
    try:
        yield client
    finally:
        client.close()
        cluster.close(timeout=timeout_s)


def n_workers(client: Any) -> int:
    """Number of workers the client's scheduler knows."""
    return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))


_ACTIVE_CLIENTS: list[Any] = []


def dask_enabled() -> bool:
    """Train on Dask? True when $TRADECAST_DASK is 1/true/yes (the `shared` profile sets it) or $DASK_SCHEDULER
    names a cluster."""
    flag = os.environ.get("TRADECAST_DASK", "").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return False
    return flag in ("1", "true", "yes", "on") or scheduler_address() is not None


@contextlib.contextmanager
def training_cluster(progress: Any = None) -> Iterator[Any]:
    """Around a training pipeline: when `dask_enabled()`, a Dask client that is also dask's default scheduler
    (so Feast's file offline store, which is built on dask.dataframe, runs its point-in-time joins on the
    cluster) and that `active_client()` hands to the estimators; otherwise None and nothing changes."""
    if not dask_enabled():
        yield None
        return
    with dask_client() as client:
        if progress is not None:
            progress(f"Dask: {n_workers(client)} workers at {client.scheduler.address}")
        _ACTIVE_CLIENTS.append(client)
        try:
            yield client
        finally:
            _ACTIVE_CLIENTS.remove(client)


def active_client() -> Any | None:
    """The client of the innermost `training_cluster()`, or None (train in this process)."""
    return _ACTIVE_CLIENTS[-1] if _ACTIVE_CLIENTS else None


# ----------------------------------------------------------------------------- features


def _series_partition(part: pd.DataFrame, skus: pd.DataFrame, cfg: Any, frequency: str, first: pd.Timestamp,
                      last: pd.Timestamp) -> pd.DataFrame:
    """compute_demand_series on the whole series of one partition, on the global period grid."""
    from features.compute import compute_demand_series

    if part.empty:
        return _empty_demand_frame(skus, cfg, frequency)
    # A two-row padding series spanning the full date range makes every partition use the global period grid
    # (compute_demand_series derives it from the data it sees); its output rows are dropped.
    pad = part.iloc[[0, 0]].copy()  # same columns and dtypes as the data
    pad["sku_id"] = _PAD_SERIES_SKU
    span = pd.DatetimeIndex([first, last])
    tz = getattr(pd.to_datetime(part["date"]).dt, "tz", None)
    pad["date"] = span.tz_localize("UTC").tz_convert(tz) if tz is not None else span
    out = compute_demand_series(pd.concat([part, pad], ignore_index=True), skus, cfg, frequency)
    return out[~out["series_id"].str.startswith(_PAD_SERIES_SKU + "|")].reset_index(drop=True)


def _empty_demand_frame(skus: pd.DataFrame, cfg: Any, frequency: str) -> pd.DataFrame:
    from features.compute import compute_demand_series

    probe = pd.DataFrame({"sku_id": [_PAD_SERIES_SKU], "market": ["US"], "date": [pd.Timestamp("2020-01-01")],
                          "units": [0.0]})
    return compute_demand_series(probe, skus, cfg, frequency).iloc[:0]


def demand_series_dask(daily_sales: pd.DataFrame, skus: pd.DataFrame, cfg: Any | None = None, frequency: str = "D",
                       partitions: int | None = None, client: Any | None = None) -> pd.DataFrame:
    """The demand_series feature view computed on Dask: daily_sales is split into `partitions` groups of whole
    SKUs (all markets of a SKU together), each computed by compute_demand_series on the global period grid.
    Returns the same rows as compute_demand_series(daily_sales, skus, cfg, frequency), sorted the same way."""
    import dask
    import dask.dataframe as dd

    from features.compute import load_features_config

    cfg = cfg or load_features_config()
    if daily_sales.empty:
        raise TradecastError("daily_sales: no rows to compute demand features from")
    dates = pd.to_datetime(daily_sales["date"])
    if getattr(dates.dt, "tz", None) is not None:
        dates = dates.dt.tz_convert("UTC").dt.tz_localize(None)
    first, last = dates.min().normalize(), dates.max().normalize()
    sku_codes = pd.factorize(daily_sales["sku_id"].astype(str), sort=True)[0]
    n_parts = max(1, min(partitions or 4 * (n_workers(client) if client is not None else 2), int(sku_codes.max()) + 1))
    # whole SKUs per partition: partition p holds SKU codes with code % n == p (balanced, no series split)
    part_of = sku_codes % n_parts
    if client is not None:
        # parts go to the workers directly (scatter), not through the task graph
        ddf = dd.from_delayed(client.scatter([daily_sales[part_of == p] for p in range(n_parts)]),
                              meta=daily_sales.iloc[:0], verify_meta=False)
        skus_arg = client.scatter(skus, broadcast=True)
    else:
        ordered = daily_sales.assign(_part=part_of).set_index("_part").sort_index(kind="mergesort")
        ddf = dd.from_pandas(ordered, npartitions=n_parts, sort=True)  # equal index values never straddle parts
        skus_arg = dask.delayed(skus)
    meta = _empty_demand_frame(skus, cfg, frequency)
    result = ddf.map_partitions(lambda part, s: _series_partition(part.reset_index(drop=True), s, cfg, frequency,
                                                                  first, last), skus_arg, meta=meta)
    out = client.compute(result).result() if client is not None else result.compute(scheduler="processes")
    return out.sort_values(["event_timestamp", "series_id"], kind="mergesort").reset_index(drop=True)


def demand_training_frame(daily_sales: pd.DataFrame, skus: pd.DataFrame, config: Any, cfg: Any | None = None,
                          client: Any | None = None) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Demand training examples with point-in-time features, computed for data too big for the Feast file join.

    Examples are sampled exactly as the pipeline does (training.demand.sample_examples); each gets the
    demand_series row of its series stamped at or before its `as_of` and not older than the view's TTL (the
    rule Feast's get_historical_features applies), then the request-time features (training.demand.
    prepare_features). Unlike the Feast path, missing values stay NaN (LightGBM's missing branch) instead of
    the stored defaults. Features are computed on Dask when `client` is given. Returns (frame, numeric, categorical).
    """
    from features.compute import compute_demand_series, load_features_config
    from training.demand import CATEGORICAL, NOT_FEATURES, REQUEST_NUMERIC, prepare_features, sample_examples

    cfg = cfg or load_features_config()
    sales = daily_sales.assign(date=pd.to_datetime(daily_sales["date"]).dt.normalize())
    examples = sample_examples(sales, config, "D")
    if client is not None:
        features = demand_series_dask(sales, skus, cfg, "D", client=client)
    else:
        features = compute_demand_series(sales, skus, cfg, "D")
    features = features.assign(event_timestamp=pd.to_datetime(features["event_timestamp"], utc=True)
                               .dt.tz_localize(None)).sort_values("event_timestamp", kind="mergesort")
    ex = examples.assign(series_id=examples["sku_id"].astype(str) + "|" + examples["market"].astype(str),
                         _as_of=pd.to_datetime(examples["as_of"]).astype("datetime64[ns]"),
                         example_id=np.arange(len(examples)))
    ex["target_dow"] = pd.to_datetime(ex["target_date"]).dt.dayofweek.astype("float64")
    joined = pd.merge_asof(ex.sort_values("_as_of", kind="mergesort"),
                           features.rename(columns={"event_timestamp": "_feature_ts"}).astype({"_feature_ts": "datetime64[ns]"}),
                           left_on="_as_of", right_on="_feature_ts", by="series_id", direction="backward",
                           tolerance=pd.Timedelta(days=cfg.ttl_days["demand_series"]))
    joined = joined.sort_values("example_id").drop(columns=["_as_of", "_feature_ts"]).reset_index(drop=True)
    frame = prepare_features(joined, "D")
    categorical = [c for c in CATEGORICAL if c in frame.columns]
    skip = set(NOT_FEATURES) | set(categorical) | {"market", "horizon"}
    numeric = [c for c in features.columns if c not in skip and c != "series_id" and
               pd.api.types.is_numeric_dtype(frame[c])]
    from features.on_demand import ON_DEMAND_OUTPUTS

    numeric += [c for c in ON_DEMAND_OUTPUTS["demand_request"] + REQUEST_NUMERIC if c in frame.columns and c not in numeric]
    return frame, numeric, categorical


_PAD_MERCHANT = "__dask_pad__"
RISK_VIEWS = ("risk_merchant", "buyer_activity", "device_activity", "ip_activity")


def _entity_parts(keys: pd.Series, n_parts: int) -> tuple[np.ndarray, int, pd.Index]:
    """Partition number of each row (whole entities per partition: sorted entity code % n), the number of
    partitions used (never more than entities) and the entities in code order."""
    codes, uniques = pd.factorize(keys.astype(str), sort=True)
    n = max(1, min(n_parts, len(uniques)))
    return codes % n, n, pd.Index(uniques)


def _dask_parts(frames: list[pd.DataFrame], client: Any | None) -> Any:
    """A dask DataFrame of `frames`, one partition each: scattered to the workers when a client is given (not
    copied through the task graph), else delayed pieces for the local process scheduler."""
    import dask
    import dask.dataframe as dd

    pieces = client.scatter(frames) if client is not None else [dask.delayed(f) for f in frames]
    return dd.from_delayed(pieces, meta=frames[0].iloc[:0], verify_meta=False)


def _small_table(table: pd.DataFrame | None, client: Any | None) -> Any:
    """A lookup table passed whole to every partition (broadcast to the workers, or a delayed value)."""
    import dask

    if table is None:
        return None
    return client.scatter(table, broadcast=True) if client is not None else dask.delayed(table)


def _time_like(values: list[pd.Timestamp], column: pd.Series) -> pd.Series:
    """Naive UTC timestamps in the time zone (or not) of `column`."""
    span = pd.Series(pd.DatetimeIndex(values))
    tz = getattr(pd.to_datetime(column).dt, "tz", None)
    return span.dt.tz_localize("UTC").dt.tz_convert(tz) if tz is not None else span


def _risk_merchant_partition(part: pd.DataFrame, shipments: pd.DataFrame | None, merchants: pd.DataFrame,
                             cfg: Any, first: pd.Timestamp, last: pd.Timestamp, meta: pd.DataFrame) -> pd.DataFrame:
    """compute_risk_merchant on the whole merchants of one partition, on the global day grid."""
    from features.compute import compute_risk_merchant

    if part.empty:
        return meta
    # compute_risk_merchant derives its day grid from the orders (and label report times) it sees, and every
    # merchant's rows run to the grid's end: a padding merchant with orders at the first and last moment of all
    # orders puts each partition on the global grid; its own rows are dropped
    pad = part.iloc[[0, 0]].copy()
    pad["merchant_id"] = _PAD_MERCHANT
    pad["ordered_at"] = _time_like([first, last], part["ordered_at"]).to_numpy()
    for c in ("fraud_reported_at", "compliance_reported_at"):
        if c in pad:
            pad[c] = pad[c].iloc[:0].reindex(pad.index)  # NaT of the column's own dtype
    out = compute_risk_merchant(pd.concat([part, pad], ignore_index=True), merchants, shipments, cfg)
    return out[out["merchant_id"] != _PAD_MERCHANT].reset_index(drop=True)


def _activity_partition(part: pd.DataFrame, key: str, prefix: str, meta: pd.DataFrame) -> pd.DataFrame:
    """compute_activity on the whole entities (buyers, devices or IPs) of one partition."""
    from features.compute import compute_activity

    return meta if part.empty else compute_activity(part, key, prefix)


def _risk_span(orders: pd.DataFrame) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First order time and the last of order and label report times (naive UTC): compute_risk_merchant's grid."""
    def naive(ts: pd.Series) -> pd.Series:
        ts = pd.to_datetime(ts)
        return ts.dt.tz_convert("UTC").dt.tz_localize(None) if ts.dt.tz is not None else ts

    first, last = naive(orders["ordered_at"]).min(), naive(orders["ordered_at"]).max()
    for c in ("fraud_reported_at", "compliance_reported_at"):
        if c in orders and orders[c].notna().any():
            last = max(last, naive(orders[c]).max())
    return first, last


def risk_features_dask(orders: pd.DataFrame, merchants: pd.DataFrame | None = None,
                       shipments: pd.DataFrame | None = None, cfg: Any | None = None,
                       views: tuple[str, ...] = RISK_VIEWS, partitions: int | None = None,
                       client: Any | None = None) -> dict[str, pd.DataFrame]:
    """The risk feature views computed on Dask over partitions of whole entities, each by the very same
    features.compute function the single process uses.

    - risk_merchant: orders partitioned by merchant_id, and shipments with them (a merchant's shipments go to
      its partition; shipments of merchants without orders add nothing), `merchants` broadcast whole;
      compute_risk_merchant per partition on the global day grid.
    - buyer_activity / device_activity / ip_activity: orders with that key partitioned by buyer_id / device_id /
      ip; compute_activity per partition.
    Each view has its own partitioning, so no process holds all orders for a view. Returns view -> frame sorted
    by (entity key, event_timestamp): the rows and values of compute_risk_merchant / compute_activity on all
    orders, sorted the same way; activity amounts (`*_amount_24h`, `*_amount_mean`) are differences of running
    sums, so they agree to floating-point rounding (relative ~1e-12), everything else exactly.
    `partitions` per view: default 4 per worker, never more than entities. Without a client, Dask's local
    process scheduler runs the partitions.
    """
    from features.compute import ACTIVITY_KEYS, compute_activity, compute_risk_merchant, load_features_config

    unknown = sorted(set(views) - set(RISK_VIEWS))
    if unknown:
        raise TradecastError(f"risk views {unknown}: choose from {', '.join(RISK_VIEWS)}")
    if orders.empty:
        raise TradecastError("orders: no rows to compute risk features from")
    cfg = cfg or load_features_config()
    n_parts = partitions or 4 * (n_workers(client) if client is not None else 2)
    pending: dict[str, Any] = {}
    keys: dict[str, str] = {}
    if "risk_merchant" in views:
        if merchants is None:
            raise TradecastError("risk_merchant: the merchants table is needed")
        keys["risk_merchant"] = "merchant_id"
        first, last = _risk_span(orders)
        part_of, n, merchant_ids = _entity_parts(orders["merchant_id"], n_parts)
        order_parts = [orders[part_of == p] for p in range(n)]
        ship = None
        if shipments is not None and "merchant_id" in shipments:
            # the same merchant -> partition map for shipments (shipments of merchants without orders: dropped)
            code = merchant_ids.get_indexer(shipments["merchant_id"].astype(str))
            ship_of = np.where(code >= 0, code % n, -1)
            ship = _dask_parts([shipments[ship_of == p] for p in range(n)], client)
        # meta: the function's own output on one merchant's orders
        probe_orders = orders[orders["merchant_id"].astype(str) == str(orders["merchant_id"].iloc[0])]
        probe_ships = shipments.iloc[:0] if shipments is not None else None
        meta = compute_risk_merchant(probe_orders, merchants, probe_ships, cfg).iloc[:0]
        odd = _dask_parts(order_parts, client)
        lookup = _small_table(merchants, client)
        if ship is not None:
            pending["risk_merchant"] = odd.map_partitions(
                lambda part, sh, m: _risk_merchant_partition(part, sh, m, cfg, first, last, meta),
                ship, lookup, meta=meta, align_dataframes=False)
        else:
            pending["risk_merchant"] = odd.map_partitions(
                lambda part, m: _risk_merchant_partition(part, None, m, cfg, first, last, meta), lookup, meta=meta)
    for view, (key, prefix) in ACTIVITY_KEYS.items():
        if view not in views:
            continue
        keys[view] = key
        od = orders[orders[key].notna()] if key in orders else orders.iloc[:0]
        meta = compute_activity(od.iloc[:1] if len(od) else od, key, prefix).iloc[:0]
        if od.empty:
            pending[view] = meta
            continue
        part_of, n, _ = _entity_parts(od[key], n_parts)
        pending[view] = _dask_parts([od[part_of == p] for p in range(n)], client).map_partitions(
            lambda part, key=key, prefix=prefix, meta=meta: _activity_partition(part, key, prefix, meta), meta=meta)
    lazy = {v: f for v, f in pending.items() if not isinstance(f, pd.DataFrame)}
    if client is not None:
        done = dict(zip(lazy, client.gather(client.compute(list(lazy.values())))))
    else:
        import dask

        done = dict(zip(lazy, dask.compute(*lazy.values(), scheduler="processes")))
    out = {}
    for view in views:
        frame = done.get(view, pending.get(view))
        out[view] = frame.sort_values([keys[view], "event_timestamp"], kind="mergesort").reset_index(drop=True)
    return out


# ----------------------------------------------------------------------------- training


def _scatter_rows(client: Any, X: pd.DataFrame, y: np.ndarray, parts: list[np.ndarray]) -> tuple[Any, Any]:
    """Dask DataFrame / Series of the rows `parts` (positions into X and y), one partition each, scattered to the
    workers: not embedded in the task graph, which would copy them through the scheduler. On a real cluster the
    frame would rather come from Feast's join already distributed."""
    import dask.dataframe as dd

    x_parts = client.scatter([X.iloc[idx].reset_index(drop=True) for idx in parts])
    y_parts = client.scatter([pd.Series(y[idx], name="target") for idx in parts])
    dX = dd.from_delayed(x_parts, meta=X.iloc[:0], verify_meta=False)
    dy = dd.from_delayed(y_parts, meta=pd.Series([], dtype=y.dtype, name="target"), verify_meta=False)
    return dX, dy


class DaskLGBMQuantileRegressor(LGBMQuantileRegressor):
    """LGBMQuantileRegressor trained with lightgbm.dask (data-parallel LightGBM on the client's workers).

    `client`: a distributed.Client (default: `active_client()`; with neither, it trains in this process like its
    parent class); `partitions`: row partitions of the training data (default 2 per worker).
    After `fit`, prediction works locally (the fitted models are plain LGBMRegressor objects) and `to_local()`
    gives the equivalent LGBMQuantileRegressor for packaging.
    """

    def __init__(self, numeric: list[str] | None = None, categorical: list[str] | None = None,
                 quantiles: tuple[float, ...] = (0.1, 0.5, 0.9), params: dict[str, Any] | None = None,
                 monotone: dict[str, int] | None = None, log_target: bool = False, client: Any = None,
                 partitions: int | None = None):
        super().__init__(numeric=numeric, categorical=categorical, quantiles=quantiles, params=params,
                         monotone=monotone, log_target=log_target)
        self.client = client
        self.partitions = partitions

    def fit(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> "DaskLGBMQuantileRegressor":
        import lightgbm.dask as lgbd

        client = self.client or active_client()
        if client is None:  # e.g. a clone refitted outside a training_cluster(): same model, in this process
            return super().fit(X, y, sample_weight=sample_weight)
        if sample_weight is not None:
            raise TradecastError("DaskLGBMQuantileRegressor: sample weights are not supported")
        self.numeric_ = list(self.numeric or [])
        self.categories_ = fit_categories(X, list(self.categorical or []))
        self.columns_ = self.numeric_ + list(self.categories_)
        Xm = encode_frame(X, self.numeric_, self.categories_)[self.columns_].reset_index(drop=True)
        target = np.asarray(y, dtype="float64")
        if self.log_target:
            target = np.log1p(np.clip(target, 0, None))
        n_parts = self.partitions or 2 * n_workers(client)
        # rows are shuffled before partitioning so each worker sees every period and series (time-ordered
        # partitions would give each worker a different era and skew its bin boundaries)
        order = np.random.default_rng(0).permutation(len(Xm))
        dX, dy = _scatter_rows(client, Xm, target, np.array_split(order, n_parts))
        params = dict(self.params or lgbm_params(None))
        params.pop("n_jobs", None)  # lightgbm.dask uses each worker's thread count
        method = params.pop("monotone_constraints_method", "advanced")  # as LGBMQuantileRegressor.fit does
        mono = _monotone_vector(self.columns_, self.monotone)
        self.center_ = int(np.argmin(np.abs(np.asarray(self.quantiles, dtype=float) - 0.5)))
        self.constrained_ = any(mono)
        self.models_ = []
        for i, q in enumerate(self.quantiles):
            if i == self.center_ and self.constrained_:
                model = lgbd.DaskLGBMRegressor(client=client, objective="regression", monotone_constraints=mono,
                                               monotone_constraints_method=method, **params)
            else:
                model = lgbd.DaskLGBMRegressor(client=client, objective="quantile", alpha=float(q), **params)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
                model.fit(dX, dy)
            self.models_.append(model.to_local())
        self.feature_importances_ = self.models_[self.center_].booster_.feature_importance("gain")
        return self

    def to_local(self) -> LGBMQuantileRegressor:
        """The fitted model as a plain LGBMQuantileRegressor (no Dask reference; picklable, servable)."""
        local = LGBMQuantileRegressor(numeric=self.numeric, categorical=self.categorical, quantiles=self.quantiles,
                                      params=self.params, monotone=self.monotone, log_target=self.log_target)
        for name in ("numeric_", "categories_", "columns_", "center_", "constrained_", "models_",
                     "feature_importances_"):
            setattr(local, name, getattr(self, name))
        return local

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["client"] = None  # a live client does not pickle
        return state


class DaskLGBMCalibratedClassifier(LGBMCalibratedClassifier):
    """LGBMCalibratedClassifier whose LightGBM booster is trained with lightgbm.dask.DaskLGBMClassifier.

    Everything else is the parent's `fit`: time order, the calibration slice, sqrt(neg/pos) class weighting,
    monotone constraints and Platt calibration (computed in this process on the calibration slice).
    `client`: a distributed.Client (default: `active_client()`; with neither, it trains in this process like its
    parent class); `partitions`: row partitions of the training rows (default 2 per worker, never more than
    positives). Partitions are stratified by class, so every worker sees the same fraud rate.
    `dask_workers_`: workers of the cluster the booster was trained on (0: trained in this process). `to_local()` gives the
    equivalent LGBMCalibratedClassifier for packaging.
    """

    def __init__(self, numeric: list[str] | None = None, categorical: list[str] | None = None,
                 params: dict[str, Any] | None = None, calibration_share: float = 0.2,
                 monotone: dict[str, int] | None = None, balance: str = "sqrt", client: Any = None,
                 partitions: int | None = None):
        super().__init__(numeric=numeric, categorical=categorical, params=params,
                         calibration_share=calibration_share, monotone=monotone, balance=balance)
        self.client = client
        self.partitions = partitions

    def _fit_booster(self, X: pd.DataFrame, labels: np.ndarray, params: dict[str, Any]) -> Any:
        import lightgbm.dask as lgbd

        client = self.client or active_client()
        if client is None:  # e.g. a clone refitted outside a training_cluster(): same model, in this process
            self.dask_workers_ = 0
            return super()._fit_booster(X, labels, params)
        labels = np.asarray(labels, dtype="int64")
        n_parts = max(1, min(self.partitions or 2 * n_workers(client), int(labels.sum())))
        rng = np.random.default_rng(0)
        pos = np.array_split(rng.permutation(np.flatnonzero(labels == 1)), n_parts)
        neg = np.array_split(rng.permutation(np.flatnonzero(labels != 1)), n_parts)
        dX, dy = _scatter_rows(client, X, labels, [np.sort(np.concatenate(pn)) for pn in zip(pos, neg)])
        params = dict(params)
        n_jobs = params.pop("n_jobs", None)  # lightgbm.dask uses each worker's thread count
        model = lgbd.DaskLGBMClassifier(client=client, objective="binary", **params)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
            model.fit(dX, dy)
        self.dask_workers_ = n_workers(client)
        local = model.to_local()
        if n_jobs is not None:
            local.set_params(n_jobs=n_jobs)  # predictions use the configured threads, as the local model does
        return local

    def to_local(self) -> LGBMCalibratedClassifier:
        """The fitted model as a plain LGBMCalibratedClassifier (no Dask reference; picklable, servable)."""
        params = {k: v for k, v in self.get_params(deep=False).items() if k not in ("client", "partitions")}
        local = LGBMCalibratedClassifier(**params)
        for name, value in self.__dict__.items():
            if name.endswith("_") and not name.startswith("_") and name != "dask_workers_":
                setattr(local, name, value)
        return local

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["client"] = None  # a live client does not pickle
        return state


def demand_estimator_args(numeric: list[str], categorical: list[str], config: Any) -> dict[str, Any]:
    """The demand pipeline's LightGBM settings (training/demand.py DemandFamily._lightgbm), from a DemandConfig."""
    from training.demand import MONOTONE

    return {"numeric": numeric, "categorical": categorical, "quantiles": tuple(config.quantiles),
            "params": lgbm_params(config.lightgbm), "monotone": {k: v for k, v in MONOTONE.items() if k in numeric},
            "log_target": True}


def fit_demand(frame: pd.DataFrame, numeric: list[str], categorical: list[str], config: Any,
               client: Any | None = None) -> LGBMQuantileRegressor:
    """Fit the demand quantile model on `frame` (label column `units`): in this process when `client` is None,
    else on the Dask cluster behind `client`. Either way returns a plain LGBMQuantileRegressor."""
    args = demand_estimator_args(numeric, categorical, config)
    if client is None:
        return LGBMQuantileRegressor(**args).fit(frame, frame["units"])
    return DaskLGBMQuantileRegressor(client=client, **args).fit(frame, frame["units"]).to_local()


def agreement(local: LGBMQuantileRegressor, distributed: LGBMQuantileRegressor, X: pd.DataFrame,
              y: np.ndarray | pd.Series) -> dict[str, float]:
    """Compare two demand models on the same rows: accuracy (1 - WAPE) of each, their difference, P50 correlation,
    median relative P50 difference and P10-P90 coverage of each."""
    from training import metrics as M

    y = np.asarray(y, dtype="float64")
    ql, qd = local.predict_quantiles(X), distributed.predict_quantiles(X)
    ml = M.demand_metrics(y, ql[:, 0], ql[:, 1], ql[:, 2])
    md = M.demand_metrics(y, qd[:, 0], qd[:, 1], qd[:, 2])
    p50l, p50d = ql[:, 1], qd[:, 1]
    rel = np.abs(p50d - p50l) / np.maximum(np.abs(p50l), 1.0)
    return {"accuracy_local": ml["accuracy"], "accuracy_dask": md["accuracy"],
            "accuracy_diff": md["accuracy"] - ml["accuracy"],
            "p50_correlation": float(np.corrcoef(p50l, p50d)[0, 1]),
            "p50_median_rel_diff": float(np.median(rel)),
            "coverage_local": ml["coverage_p10_p90"], "coverage_dask": md["coverage_p10_p90"], "n": float(len(y))}


def within_tolerance(result: dict[str, float], tolerance: dict[str, float] | None = None) -> bool:
    """True when `agreement` output is within DEMAND_TOLERANCE (or `tolerance`)."""
    tol = tolerance or DEMAND_TOLERANCE
    return abs(result["accuracy_diff"]) <= tol["accuracy"] and result["p50_correlation"] >= tol["p50_correlation"]


def risk_estimator_args(numeric: list[str], categorical: list[str], config: Any, label: str) -> dict[str, Any]:
    """The risk pipeline's classifier settings for `label` (is_fraud_label or is_compliance_label), taken from
    training/risk.py RiskFamily._lgbm itself, from a RiskConfig."""
    from types import SimpleNamespace

    from training.risk import MONOTONE_COMPLIANCE, MONOTONE_FRAUD, RiskFamily

    if label not in RISK_LABELS:
        raise TradecastError(f"risk label '{label}': choose one of {', '.join(RISK_LABELS)}")
    monotone = MONOTONE_FRAUD if label == "is_fraud_label" else MONOTONE_COMPLIANCE
    est = RiskFamily(config)._lgbm(SimpleNamespace(numeric=numeric, categorical=categorical), monotone)
    return {k: v for k, v in est.get_params(deep=False).items() if k not in ("client", "partitions")}


def fit_risk(frame: pd.DataFrame, label: str, numeric: list[str], categorical: list[str], config: Any,
             client: Any | None = None) -> LGBMCalibratedClassifier:
    """Fit the risk pipeline's calibrated classifier for `label` on `frame` (time column `ordered_at`): in this
    process when `client` is None, else with its booster trained on the Dask cluster behind `client`. Either
    way returns a plain LGBMCalibratedClassifier."""
    args = risk_estimator_args(numeric, categorical, config, label)
    t = pd.to_datetime(frame["ordered_at"])
    if client is None:
        return LGBMCalibratedClassifier(**args).fit(frame, frame[label], sample_time=t)
    return DaskLGBMCalibratedClassifier(client=client, **args).fit(frame, frame[label], sample_time=t).to_local()


def risk_agreement(local: Any, distributed: Any, X: pd.DataFrame, y: np.ndarray | pd.Series,
                   false_alarm_rate: float = 0.03) -> dict[str, float]:
    """Compare two risk classifiers on the same rows: PR-AUC and recall at `false_alarm_rate` of each and their
    differences, Brier of each, Pearson correlation of the probabilities and their largest absolute difference."""
    from training import metrics as M

    y = np.asarray(y).astype(int)
    pl, pdist = local.predict_proba(X)[:, 1], distributed.predict_proba(X)[:, 1]
    ml = M.classifier_metrics(y, pl, false_alarm_rate)
    md = M.classifier_metrics(y, pdist, false_alarm_rate)
    return {"pr_auc_local": ml["pr_auc"], "pr_auc_dask": md["pr_auc"], "pr_auc_diff": md["pr_auc"] - ml["pr_auc"],
            "recall_at_fa_local": ml["recall_at_fa"], "recall_at_fa_dask": md["recall_at_fa"],
            "recall_at_fa_diff": md["recall_at_fa"] - ml["recall_at_fa"],
            "brier_local": ml["brier"], "brier_dask": md["brier"],
            "p_correlation": float(np.corrcoef(pl, pdist)[0, 1]), "p_max_abs_diff": float(np.max(np.abs(pl - pdist))),
            "positives": float(y.sum()), "n": float(len(y))}


def risk_within_tolerance(result: dict[str, float], tolerance: dict[str, float] | None = None) -> bool:
    """True when `risk_agreement` output is within RISK_TOLERANCE (or `tolerance`)."""
    tol = tolerance or RISK_TOLERANCE
    return (abs(result["pr_auc_diff"]) <= tol["pr_auc"] and abs(result["recall_at_fa_diff"]) <= tol["recall_at_fa"]
            and result["p_correlation"] >= tol["p_correlation"])
