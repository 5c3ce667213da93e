"""Feature computation: canonical tables -> one Parquet source per Feast feature view (vectorised pandas/numpy).

Time rules (no future leakage), per view; `event_timestamp` is the moment a row's values became known:
- demand_series: a row stamped T = D + 1 period summarises the days up to and including D (day D is complete
  at D+1 00:00). Rolling statistics use stock-out-free days only (sales on stock-out days are censored).
- delay_lane / delay_carrier / category_norms / risk_merchant: one row per entity per day stamped T = D+1
  00:00; outcome statistics (transit, late, clearance, inspection) use shipments *delivered* before T; volume
  and congestion counts use shipments *created* before T; chargeback / compliance counts use labels
  *reported* before T.
- buyer/device/ip activity: one row per order and per arriving chargeback of the entity, stamped at that
  moment, holding the state after it (velocity over the last hour / day, totals, chargebacks reported so far).

Windows are trailing calendar windows ending at T: "28d" = the 28 days before T.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import numpy as np
import pandas as pd
from pydantic import field_validator, model_validator

from tradecast.config import ConfigModel, load_config

Progress = Callable[[str], None]
DAY = pd.Timedelta(days=1)
DEFAULT_TTL_DAYS: dict[str, float] = {
    "demand_series": 7, "delay_lane": 3, "delay_carrier": 3, "category_norms": 3, "risk_merchant": 3,
    "buyer_activity": 365, "device_activity": 365, "ip_activity": 365,
}


class FeaturesConfig(ConfigModel):
    """configs/features.yaml: online store, rolling windows and time-to-live per feature view."""

    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str | None = None
    demand_windows_days: tuple[int, ...] = (7, 28, 91)
    delay_windows_days: tuple[int, ...] = (7, 28)
    risk_windows_days: tuple[int, ...] = (28, 91)
    label_history_days: int = 180
    ttl_days: dict[str, float] = dict(DEFAULT_TTL_DAYS)

    @field_validator("demand_windows_days", "delay_windows_days", "risk_windows_days")
    @classmethod
    def _positive_windows(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(w < 1 for w in value):
            raise ValueError("windows must be a non-empty list of positive day counts")
        return tuple(sorted(set(value)))

    @field_validator("ttl_days")
    @classmethod
    def _known_views(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(DEFAULT_TTL_DAYS))
        if unknown:
            raise ValueError(f"unknown feature view(s) {unknown}; known: {sorted(DEFAULT_TTL_DAYS)}")
        if any(v <= 0 for v in value.values()):
            raise ValueError("every TTL must be a positive number of days")
        return {**DEFAULT_TTL_DAYS, **value}

    @model_validator(mode="after")
    def _reference_windows(self) -> "FeaturesConfig":
        # Request-time features compare against these windows (features/on_demand.py).
        if 28 not in self.demand_windows_days:
            raise ValueError("demand_windows_days must include 28 (reference window of the request-time features)")
        if 28 not in self.delay_windows_days:
            raise ValueError("delay_windows_days must include 28 (reference window of the request-time features)")
        return self


def load_features_config(path: Path | str | None = None) -> FeaturesConfig:
    """Load configs/features.yaml (or `path`) with TRADECAST_FEATURES__* overrides."""
    return load_config(FeaturesConfig, "features", path)


# ----------------------------------------------------------------------------- helpers


def _utc(ts: pd.Series | pd.DatetimeIndex) -> pd.Series:
    """Timestamps as tz-aware UTC (naive input is taken as UTC), the form Feast joins on."""
    ts = pd.to_datetime(ts)
    if getattr(ts.dt if isinstance(ts, pd.Series) else ts, "tz", None) is None:
        return ts.dt.tz_localize("UTC") if isinstance(ts, pd.Series) else ts.tz_localize("UTC")
    return ts.dt.tz_convert("UTC") if isinstance(ts, pd.Series) else ts.tz_convert("UTC")


def _naive(ts: pd.Series) -> pd.Series:
    ts = pd.to_datetime(ts)
    return ts.dt.tz_convert("UTC").dt.tz_localize(None) if ts.dt.tz is not None else ts


def _roll_sum(a: np.ndarray, w: int) -> np.ndarray:
    """Trailing sum over the last `w` rows (axis 0) of a 2-D array, NaN treated as 0."""
    c = np.cumsum(np.nan_to_num(a, nan=0.0), axis=0)
    out = c.copy()
    out[w:] -= c[:-w]
    return out


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _std_from_sums(s: np.ndarray, s2: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Sample standard deviation from sums, counts (NaN below 2 values)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s / np.where(n > 0, n, 1)
        var = (s2 - n * mean**2) / np.where(n > 1, n - 1, 1)
    return np.where(n > 1, np.sqrt(np.clip(var, 0, None)), np.nan)


class DailyGrid:
    """Entities x days bins of events: day d holds events in [d, d+1); a row stamped d+1 sees days <= d."""

    def __init__(self, keys: pd.Index, start: pd.Timestamp, end: pd.Timestamp) -> None:
        self.keys = pd.Index(keys)
        self.days = pd.date_range(start.normalize(), end.normalize(), freq="D")

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.days), len(self.keys)

    def bin(self, key: pd.Series, ts: pd.Series, values: pd.Series | np.ndarray | None = None) -> np.ndarray:
        """Sum of `values` (1 per event when None) per (day, key); events outside the grid are dropped."""
        k = self.keys.get_indexer(key)
        d = ((_naive(ts).dt.normalize() - self.days[0]) // DAY).to_numpy()
        v = np.ones(len(k)) if values is None else np.asarray(values, dtype="float64")
        ok = (k >= 0) & (d >= 0) & (d < len(self.days)) & ~np.isnan(v) & pd.notna(ts).to_numpy()
        out = np.zeros(self.shape)
        np.add.at(out, (d[ok].astype(np.int64), k[ok]), v[ok])
        return out

    def long(self, columns: dict[str, np.ndarray], key_name: str, active: np.ndarray) -> pd.DataFrame:
        """Stack (day, key) arrays into rows stamped day+1 where `active` is True."""
        di, ki = np.nonzero(active)
        out = pd.DataFrame({key_name: self.keys.to_numpy()[ki],
                            "event_timestamp": _utc(pd.Series(self.days[di] + DAY))})
        for name, arr in columns.items():
            out[name] = arr[di, ki] if isinstance(arr, np.ndarray) and arr.ndim == 2 else np.asarray(arr)[ki]
        return out

    def grid_frame(self, key_name: str, active: np.ndarray) -> pd.DataFrame:
        """(key, ts=day+1) rows where `active`, in (key, ts) order, for window quantiles."""
        di, ki = np.nonzero(active)
        frame = pd.DataFrame({key_name: self.keys.to_numpy()[ki], "ts": self.days[di] + DAY, "_d": di, "_k": ki})
        return frame


def window_quantiles(events: pd.DataFrame, grid: pd.DataFrame, key: str, value: str,
                     specs: list[tuple[str, int, float]]) -> dict[str, np.ndarray]:
    """Quantiles of `value` over events in (t - w days, t] for each grid row (key, ts).

    specs: (output name, window days, quantile). Grid rows are appended as NaN values (ignored by the
    rolling quantile) after the events of the same timestamp, so an event at exactly t counts.
    """
    ev = events[[key, "ts", value]].dropna(subset=[value])
    ev = ev.assign(_grid=False)
    gr = grid[[key, "ts"]].assign(**{value: np.nan, "_grid": True, "_pos": np.arange(len(grid))})
    both = pd.concat([ev.assign(_pos=-1), gr], ignore_index=True)
    both = both.sort_values([key, "ts", "_grid"], kind="mergesort").reset_index(drop=True)
    grid_rows = both["_grid"].to_numpy()
    pos = both.loc[grid_rows, "_pos"].to_numpy().astype(np.int64)
    out: dict[str, np.ndarray] = {}
    grouped = both.groupby(key, sort=False)
    for name, w, q in specs:
        rolled = grouped.rolling(f"{w}D", on="ts", closed="right")[value].quantile(q)
        vals = rolled.to_numpy()  # rows in `both` order: groups are contiguous and already sorted
        res = np.full(len(grid), np.nan)
        res[pos] = vals[grid_rows]
        out[name] = res
    return out


def _scatter(grid: pd.DataFrame, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.full(shape, np.nan)
    out[grid["_d"].to_numpy(), grid["_k"].to_numpy()] = values
    return out


# ----------------------------------------------------------------------------- demand


def compute_demand_series(daily_sales: pd.DataFrame, skus: pd.DataFrame, cfg: FeaturesConfig,
                          frequency: str = "D") -> pd.DataFrame:
    """Per series (sku|market) and period: sales level/volatility, promo and live-stream lifts, price position, ...

    Works on a wide periods x series matrix; a row stamped T = period start + 1 period uses periods <= that one.
    """
    from features.schema import MARKET_REGION

    step = 7 if frequency == "W" else 1
    ds = daily_sales.copy()
    ds["date"] = _naive(ds["date"]).dt.normalize()
    ds["series_id"] = ds["sku_id"].astype(str) + "|" + ds["market"].astype(str)
    periods = pd.date_range(ds["date"].min(), ds["date"].max(), freq=f"{step}D")
    series = pd.Index(np.sort(ds["series_id"].unique()))
    t_idx = ((ds["date"] - periods[0]) // pd.Timedelta(days=step)).to_numpy()
    k_idx = series.get_indexer(ds["series_id"])
    shape = (len(periods), len(series))

    def wide(values, fill=np.nan) -> np.ndarray:
        out = np.full(shape, fill, dtype="float64")
        out[t_idx, k_idx] = np.asarray(values, dtype="float64")
        return out

    present = wide(np.ones(len(ds)), 0.0) > 0
    units = wide(ds["units"])
    stock_out = wide(ds["stock_out"].fillna(False).astype(bool) if "stock_out" in ds else np.zeros(len(ds)), 0.0) > 0
    price = wide(ds["price"]) if "price" in ds else np.full(shape, np.nan)
    discount = wide(ds["discount"].fillna(0.0)) if "discount" in ds else np.zeros(shape)
    promo = wide(ds["promotion_event"].notna() & (ds["promotion_event"].astype(str) != "")
                 if "promotion_event" in ds else np.zeros(len(ds)), 0.0) > 0
    live = wide(ds["live_sessions"].fillna(0) if "live_sessions" in ds else np.zeros(len(ds)), 0.0)

    valid = present & ~stock_out & ~np.isnan(units)
    obs = np.where(valid, units, 0.0)
    cols: dict[str, np.ndarray] = {}
    for w in cfg.demand_windows_days:
        p = max(1, round(w / step))
        n = _roll_sum(valid.astype(float), p)
        s = _roll_sum(obs, p)
        cols[f"units_mean_{w}d"] = _safe_div(s, n)
        cols[f"units_std_{w}d"] = _std_from_sums(s, _roll_sum(obs**2, p), n)
    p28, p91 = max(1, round(28 / step)), max(1, round(91 / step))
    n28 = _roll_sum(valid.astype(float), p28)
    present28 = _roll_sum(present.astype(float), p28)
    cols["units_last"] = np.where(present, units, np.nan)
    cols["units_max_28d"] = pd.DataFrame(np.where(valid, units, np.nan)).rolling(p28, min_periods=1).max().to_numpy()
    cols["zero_share_28d"] = _safe_div(_roll_sum((valid & (obs == 0)).astype(float), p28), n28)
    cols["stockout_share_28d"] = _safe_div(_roll_sum((present & stock_out).astype(float), p28), present28)
    cols["promo_share_91d"] = _safe_div(_roll_sum((present & promo).astype(float), p91),
                                        _roll_sum(present.astype(float), p91))
    cols["live_sessions_28d"] = _roll_sum(np.where(present, live, 0.0), p28)
    cols["live_days_28d"] = _roll_sum((present & (live > 0)).astype(float), p28)

    # Lifts over the whole history so far, shrunk towards 1 with a prior of 2 normal-like observations.
    base = valid & ~promo & ~(live > 0)
    base_mean = _safe_div(np.cumsum(np.where(base, obs, 0.0), axis=0), np.cumsum(base, axis=0).astype(float))
    for name, mask in (("promo_lift", valid & promo), ("live_lift", valid & (live > 0))):
        n_ev = np.cumsum(mask, axis=0).astype(float)
        ev_mean = _safe_div(np.cumsum(np.where(mask, obs, 0.0), axis=0), n_ev)
        raw = _safe_div(ev_mean, base_mean)
        cols[name] = np.where(n_ev > 0, (n_ev * np.nan_to_num(raw, nan=1.0) + 2.0) / (n_ev + 2.0), 1.0)
        cols[name] = np.where(np.isnan(base_mean) & (n_ev > 0), np.nan, cols[name])

    effective = np.where(present, price * (1.0 - discount), np.nan)
    cols["price_median_28d"] = pd.DataFrame(effective).rolling(p28, min_periods=1).median().to_numpy()
    cols["price_position"] = _safe_div(effective, cols["price_median_28d"])
    cols["discount_mean_28d"] = _safe_div(_roll_sum(np.where(present, discount, 0.0), p28), present28)
    lag = round(364 / step)
    mean28 = cols["units_mean_28d"]
    last_year = np.full(shape, np.nan)
    if lag < shape[0]:
        last_year[lag:] = mean28[:-lag]
    cols["yoy_ratio_28d"] = _safe_div(mean28, last_year)
    cols["history_days"] = np.cumsum(present, axis=0).astype(float) * step

    # Day-of-week profile: mean on weekday k / overall mean (shrunk with a prior of 4 observations).
    if step == 1:
        dow = periods.dayofweek.to_numpy()
        total_n = np.cumsum(valid, axis=0).astype(float)
        overall = _safe_div(np.cumsum(obs, axis=0), total_n)
        for d in range(7):
            m = valid & (dow == d)[:, None]
            n_d = np.cumsum(m, axis=0).astype(float)
            ratio = _safe_div(_safe_div(np.cumsum(np.where(m, obs, 0.0), axis=0), n_d), overall)
            cols[f"dow_index_{d}"] = np.where(np.isnan(overall), np.nan,
                                              (n_d * np.nan_to_num(ratio, nan=1.0) + 4.0) / (n_d + 4.0))
    else:
        for d in range(7):
            cols[f"dow_index_{d}"] = np.ones(shape)

    sku_of = series.str.split("|").str[0]
    market_of = series.str.split("|").str[1]
    sk = skus.set_index("sku_id").reindex(sku_of)
    launch = _naive(pd.Series(sk["launch_date"].to_numpy()))
    stamp = periods + pd.Timedelta(days=step)
    days_since = (stamp.to_numpy()[:, None] - launch.to_numpy()[None, :]) / np.timedelta64(1, "D")
    cols["days_since_launch"] = days_since.astype(float)
    static = {
        "sku_list_price": sk["price"].astype(float).to_numpy(),
        "seasonal_sku": sk["seasonal"].astype("boolean").fillna(False).astype(float).to_numpy(),
        "sku_tier": sk["tier"].astype(object).fillna("unknown").to_numpy(),
        "sku_category": sk["category"].astype(object).fillna("unknown").to_numpy(),
        "market_region": market_of.map(MARKET_REGION).fillna("unknown").to_numpy(),
    }
    active = np.cumsum(present, axis=0) > 0  # from the series' first row on
    di, ki = np.nonzero(active)
    out = pd.DataFrame({"series_id": series.to_numpy()[ki],
                        "event_timestamp": _utc(pd.Series(stamp[di]))})
    for name, arr in cols.items():
        out[name] = arr[di, ki]
    for name, arr in static.items():
        out[name] = arr[ki]
    return out


# ----------------------------------------------------------------------------- delay


def _shipments_prepared(shipments: pd.DataFrame) -> pd.DataFrame:
    sh = shipments.copy()
    sh["lane_mode"] = sh["lane"].astype(str) + "|" + sh["mode"].astype(str)
    sh["created_at"] = _naive(sh["created_at"])
    sh["delivered_at"] = _naive(sh["delivered_at"])
    done = sh["delivered_at"].notna() & sh["transit_days"].notna()
    sh["delivered_at"] = sh["delivered_at"].where(done)
    sh["late_f"] = sh["late"].astype("boolean").astype("float64")
    sh["inspection_f"] = (sh["customs_channel"].astype(str) == "inspection").astype(float).where(sh["customs_channel"].notna())
    sh["delay_ratio"] = sh["transit_days"] / sh["promised_days"].where(sh["promised_days"] > 0)
    return sh


def _delivery_stats(sh: pd.DataFrame, key: str, prefix: str, windows: tuple[int, ...], quantiles: bool,
                    start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Per key and day: outcome statistics over delivered shipments and volume over created shipments."""
    grid = DailyGrid(pd.Index(np.sort(sh[key].astype(str).unique())), start, end)
    dl = sh[sh["delivered_at"].notna()]
    k_dl, t_dl = dl[key].astype(str), dl["delivered_at"]
    n1 = grid.bin(k_dl, t_dl)
    sums = {c: grid.bin(k_dl, t_dl, dl[c]) for c in ("transit_days", "late_f", "clearance_hours", "inspection_f", "delay_ratio")}
    counts = {c: grid.bin(k_dl, t_dl, dl[c].notna().astype(float)) for c in ("late_f", "clearance_hours", "inspection_f", "delay_ratio")}
    sq = grid.bin(k_dl, t_dl, dl["transit_days"] ** 2)
    created = grid.bin(sh[key].astype(str), sh["created_at"])
    cols: dict[str, np.ndarray] = {}
    for w in windows:
        n = _roll_sum(n1, w)
        cols[f"{prefix}_late_rate_{w}d"] = _safe_div(_roll_sum(sums["late_f"], w), _roll_sum(counts["late_f"], w))
        cols[f"{prefix}_delay_ratio_{w}d"] = _safe_div(_roll_sum(sums["delay_ratio"], w), _roll_sum(counts["delay_ratio"], w))
        cols[f"{prefix}_clearance_mean_{w}d"] = _safe_div(_roll_sum(sums["clearance_hours"], w),
                                                          _roll_sum(counts["clearance_hours"], w))
        cols[f"{prefix}_delivered_{w}d"] = n
        if quantiles:
            cols[f"{prefix}_transit_std_{w}d"] = _std_from_sums(_roll_sum(sums["transit_days"], w), _roll_sum(sq, w), n)
            cols[f"{prefix}_inspection_rate_{w}d"] = _safe_div(_roll_sum(sums["inspection_f"], w),
                                                               _roll_sum(counts["inspection_f"], w))
    if not quantiles:
        cols[f"{prefix}_transit_std_28d"] = _std_from_sums(_roll_sum(sums["transit_days"], 28), _roll_sum(sq, 28),
                                                           _roll_sum(n1, 28))
    created_7, created_91 = _roll_sum(created, 7), _roll_sum(created, 91)
    cols[f"{prefix}_congestion_ratio"] = _safe_div(created_7, created_91 * 7.0 / 91.0)
    active = np.cumsum(created + n1, axis=0) > 0
    if quantiles:
        cols[f"{prefix}_created_7d"] = created_7
        in_transit = np.cumsum(created, axis=0) - np.cumsum(n1, axis=0)
        cols[f"{prefix}_in_transit"] = in_transit
        cols[f"{prefix}_in_transit_ratio"] = _safe_div(in_transit, _roll_sum(in_transit, 91) / np.minimum(
            np.arange(1, grid.shape[0] + 1), 91)[:, None])
        g = grid.grid_frame(key, active)
        ev = pd.DataFrame({key: k_dl.to_numpy(), "ts": t_dl.to_numpy(), "transit_days": dl["transit_days"].to_numpy(),
                           "clearance_hours": dl["clearance_hours"].to_numpy()})
        specs = [(f"{prefix}_transit_median_{w}d", w, 0.5) for w in windows]
        specs += [(f"{prefix}_transit_p90_{w}d", w, 0.9) for w in windows]
        for name, vals in window_quantiles(ev, g, key, "transit_days", specs).items():
            cols[name] = _scatter(g, vals, grid.shape)
        q = window_quantiles(ev, g, key, "clearance_hours", [(f"{prefix}_clearance_p90_28d", 28, 0.9)])
        cols[f"{prefix}_clearance_p90_28d"] = _scatter(g, q[f"{prefix}_clearance_p90_28d"], grid.shape)
    return grid.long(cols, key, active)


def corridor_of(mode: pd.Series, destination_market: pd.Series) -> pd.Series:
    """mode|destination region (e.g. sea|europe): the corridor a lane belongs to."""
    from features.schema import MARKET_REGION

    region = destination_market.astype(str).map(MARKET_REGION).fillna(destination_market.astype(str))
    return mode.astype(str).to_numpy(object) + "|" + region.astype(str)


def _corridor_stats(sh: pd.DataFrame, windows: tuple[int, ...], start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Per corridor (mode|destination region) and day, stamped like the lane rows: the mean transit/promise ratio
    and the number of deliveries of the last w days, and the share of the corridor's shipments in transit that
    are past their promised date (open and overdue: known before the late ones are delivered, censoring-aware).

    A lane alone sees a handful of sea deliveries a month; a disruption hits a corridor (sea lanes to Europe), and
    pooled over it the recent transit-to-promise ratio is measured on enough shipments to follow the shift."""
    grid = DailyGrid(pd.Index(np.sort(sh["corridor"].unique())), start, end)
    dl = sh[sh["delivered_at"].notna()]
    k_dl, t_dl = dl["corridor"], dl["delivered_at"]
    ratio_s = grid.bin(k_dl, t_dl, dl["delay_ratio"])
    ratio_n = grid.bin(k_dl, t_dl, dl["delay_ratio"].notna().astype(float))
    cols: dict[str, np.ndarray] = {}
    for w in windows:
        cols[f"corridor_delay_ratio_{w}d"] = _safe_div(_roll_sum(ratio_s, w), _roll_sum(ratio_n, w))
        cols[f"corridor_delivered_{w}d"] = _roll_sum(ratio_n, w)
    created = grid.bin(sh["corridor"], sh["created_at"])
    delivered = grid.bin(k_dl, t_dl)
    in_transit = np.cumsum(created, axis=0) - np.cumsum(delivered, axis=0)
    promised = pd.to_numeric(sh["promised_days"], errors="coerce")
    due = sh["created_at"] + pd.to_timedelta(promised.where(promised > 0), unit="D")
    # open and overdue at T: due before T and not delivered before T = #(due < T) - #(max(due, delivered) < T)
    closed = due.where(sh["delivered_at"].isna() | (due >= sh["delivered_at"]), sh["delivered_at"])
    closed = closed.where(sh["delivered_at"].notna() & due.notna(), pd.NaT)
    overdue_open = np.cumsum(grid.bin(sh["corridor"], due), axis=0) - np.cumsum(grid.bin(sh["corridor"], closed), axis=0)
    cols["corridor_overdue_share"] = _safe_div(overdue_open, in_transit)
    active = np.cumsum(created + delivered, axis=0) > 0
    return grid.long(cols, "corridor", active)


def compute_delay_lane(shipments: pd.DataFrame, cfg: FeaturesConfig) -> pd.DataFrame:
    """Per lane|mode and day: transit level/spread/quantiles, late rate, clearance, inspection, congestion, and the
    statistics of the lane's corridor (mode|destination region) on the same day."""
    sh = _shipments_prepared(shipments)
    start, end = sh["created_at"].min(), max(sh["created_at"].max(), sh["delivered_at"].max())
    lanes = _delivery_stats(sh, "lane_mode", "lane", cfg.delay_windows_days, True, start, end)
    sh["corridor"] = corridor_of(sh["mode"], sh["destination_market"])
    corridors = _corridor_stats(sh, cfg.delay_windows_days, start, end)
    lane_corridor = sh.drop_duplicates("lane_mode").set_index("lane_mode")["corridor"]
    lanes["corridor"] = lanes["lane_mode"].map(lane_corridor)
    out = lanes.merge(corridors, on=["corridor", "event_timestamp"], how="left").drop(columns="corridor")
    counts = [c for c in out.columns if c.startswith("corridor_delivered_")]
    out[counts] = out[counts].fillna(0.0)
    return out


def compute_delay_carrier(shipments: pd.DataFrame, cfg: FeaturesConfig) -> pd.DataFrame:
    """Per carrier and day: late rate, delay vs promise, clearance time, volume and congestion."""
    sh = _shipments_prepared(shipments)
    start, end = sh["created_at"].min(), max(sh["created_at"].max(), sh["delivered_at"].max())
    return _delivery_stats(sh, "carrier", "carrier", cfg.delay_windows_days, False, start, end)


def compute_category_norms(shipments: pd.DataFrame, orders: pd.DataFrame) -> pd.DataFrame:
    """Per product category and day: 91-day medians of value per kg (shipments) and of order amount and
    declared-to-amount ratio (orders), from records created before the row's timestamp."""
    from features.schema import CATEGORIES

    sh = shipments[shipments["category"].notna()] if "category" in shipments else shipments.iloc[:0]
    od = orders[orders["category"].notna()] if "category" in orders else orders.iloc[:0]
    times = [x for x in (_naive(sh["created_at"]), _naive(od["ordered_at"])) if len(x)]
    if not times:
        return pd.DataFrame(columns=["category", "event_timestamp", "cat_value_per_kg_median_91d",
                                     "cat_declared_ratio_median_91d", "cat_amount_median_91d"])
    start = min(t.min() for t in times)
    end = max(t.max() for t in times)
    grid = DailyGrid(pd.Index(list(CATEGORIES)), start, end)
    active = np.ones(grid.shape, dtype=bool)
    g = grid.grid_frame("category", active)
    sev = pd.DataFrame({"category": sh["category"].astype(str).to_numpy(), "ts": _naive(sh["created_at"]).to_numpy(),
                        "v": (sh["declared_value"] / sh["weight_kg"].where(sh["weight_kg"] > 0)).to_numpy()})
    oev = pd.DataFrame({"category": od["category"].astype(str).to_numpy(), "ts": _naive(od["ordered_at"]).to_numpy(),
                        "amount": od["amount"].to_numpy(),
                        "ratio": (od["declared_value"] / od["amount"].where(od["amount"] > 0)).to_numpy()})
    cols = {
        "cat_value_per_kg_median_91d": window_quantiles(sev, g, "category", "v", [("x", 91, 0.5)])["x"],
        "cat_declared_ratio_median_91d": window_quantiles(oev, g, "category", "ratio", [("x", 91, 0.5)])["x"],
        "cat_amount_median_91d": window_quantiles(oev, g, "category", "amount", [("x", 91, 0.5)])["x"],
    }
    return grid.long({k: _scatter(g, v, grid.shape) for k, v in cols.items()}, "category", active)


# ----------------------------------------------------------------------------- risk


def country_mismatch(orders: "pd.DataFrame | Mapping[str, Any]") -> "pd.Series | np.ndarray":
    """1.0 where IP, card and shipping countries (those present) disagree, 0.0 where they agree, NaN if < 2 known.
    A frame gives a Series on its index; a mapping of column -> values (the serving push) an array."""
    from features.on_demand import n_rows

    is_frame = isinstance(orders, pd.DataFrame)
    n = n_rows(orders)

    def values(c: str) -> np.ndarray:
        if c not in orders:
            return np.full(n, None, dtype=object)
        if is_frame:
            return orders[c].astype("object").where(orders[c].notna(), None).to_numpy()
        return np.array([None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v
                         for v in orders[c]], dtype=object)

    vals = [values(c) for c in ("ip_country", "card_country", "shipping_country")]
    known = [v != None for v in vals]  # noqa: E711 (elementwise on object arrays)
    differ = np.zeros(n, dtype=bool)
    for i in range(3):
        for j in range(i + 1, 3):
            differ |= known[i] & known[j] & (vals[i] != vals[j])
    n_known = known[0].astype(int) + known[1].astype(int) + known[2].astype(int)
    out = np.where(n_known >= 2, differ.astype(float), np.nan)
    return pd.Series(out, index=orders.index) if is_frame else out


def compute_risk_merchant(orders: pd.DataFrame, merchants: pd.DataFrame, shipments: pd.DataFrame | None,
                          cfg: FeaturesConfig) -> pd.DataFrame:
    """Per merchant and day: order volume, amount profile, mismatch and declaration history, chargebacks and
    compliance findings reported so far, fulfilment (late) history, age and credit grade."""
    from features.on_demand import hs_category_mismatch

    od = orders.copy()
    od["ordered_at"] = _naive(od["ordered_at"])
    od["merchant_id"] = od["merchant_id"].astype(str)
    start = od["ordered_at"].min()
    end = od["ordered_at"].max()
    for c in ("fraud_reported_at", "compliance_reported_at"):
        if c in od and od[c].notna().any():
            end = max(end, _naive(od[c]).max())
    grid = DailyGrid(pd.Index(np.sort(od["merchant_id"].unique())), start, end)
    k, t = od["merchant_id"], od["ordered_at"]
    n1 = grid.bin(k, t)
    mism = country_mismatch(od)
    amount = od["amount"].astype(float)
    ratio = od["declared_value"] / amount.where(amount > 0) if "declared_value" in od else pd.Series(np.nan, index=od.index)
    hs_mis = hs_category_mismatch(od["hs_code"], od["category"]) if "hs_code" in od and "category" in od else pd.Series(np.nan, index=od.index)
    cols: dict[str, np.ndarray] = {}
    for w in cfg.risk_windows_days:
        cols[f"merchant_orders_{w}d"] = _roll_sum(n1, w)
        cols[f"merchant_mismatch_rate_{w}d"] = _safe_div(_roll_sum(grid.bin(k, t, mism), w),
                                                         _roll_sum(grid.bin(k, t, mism.notna().astype(float)), w))
    n91 = _roll_sum(n1, 91)
    s91 = _roll_sum(grid.bin(k, t, amount), 91)
    cols["merchant_amount_mean_91d"] = _safe_div(s91, n91)
    cols["merchant_amount_std_91d"] = _std_from_sums(s91, _roll_sum(grid.bin(k, t, amount**2), 91), n91)
    cols["merchant_declared_ratio_91d"] = _safe_div(_roll_sum(grid.bin(k, t, ratio), 91),
                                                    _roll_sum(grid.bin(k, t, ratio.notna().astype(float)), 91))
    cols["merchant_hs_mismatch_rate_91d"] = _safe_div(_roll_sum(grid.bin(k, t, hs_mis), 91),
                                                      _roll_sum(grid.bin(k, t, hs_mis.notna().astype(float)), 91))
    h = cfg.label_history_days
    orders_h = _roll_sum(n1, h)
    for label, out_n, out_r in (("fraud", "chargebacks", "chargeback_rate"), ("compliance", "compliance_issues", "compliance_rate")):
        flag, rep = ("is_fraud", "fraud_reported_at") if label == "fraud" else ("is_compliance_issue", "compliance_reported_at")
        if flag in od and rep in od:
            pos = od[od[flag].astype("boolean").fillna(False).astype(bool) & od[rep].notna()]
            reported = _roll_sum(grid.bin(pos["merchant_id"], _naive(pos[rep])), h)
        else:
            reported = np.zeros(grid.shape)
        cols[f"merchant_{out_n}_{h}d"] = reported
        cols[f"merchant_{out_r}_{h}d"] = _safe_div(reported, orders_h)
    if shipments is not None and "merchant_id" in shipments and shipments["merchant_id"].notna().any():
        sh = _shipments_prepared(shipments)
        dl = sh[sh["delivered_at"].notna() & sh["merchant_id"].notna()]
        late_n = grid.bin(dl["merchant_id"].astype(str), dl["delivered_at"], dl["late_f"].notna().astype(float))
        late_s = grid.bin(dl["merchant_id"].astype(str), dl["delivered_at"], dl["late_f"])
        cols["merchant_late_rate_91d"] = _safe_div(_roll_sum(late_s, 91), _roll_sum(late_n, 91))
    else:
        cols["merchant_late_rate_91d"] = np.full(grid.shape, np.nan)
    active = np.cumsum(n1, axis=0) > 0
    g = grid.grid_frame("merchant_id", active)
    ev = pd.DataFrame({"merchant_id": k.to_numpy(), "ts": t.to_numpy(), "amount": amount.to_numpy()})
    q = window_quantiles(ev, g, "merchant_id", "amount", [("p95", 91, 0.95)])["p95"]
    cols["merchant_amount_p95_91d"] = _scatter(g, q, grid.shape)
    m = merchants.assign(merchant_id=merchants["merchant_id"].astype(str)).set_index("merchant_id").reindex(grid.keys)
    reg = _naive(pd.Series(m["registered_at"].to_numpy()))
    stamp = grid.days + DAY
    cols["merchant_age_days"] = ((stamp.to_numpy()[:, None] - reg.to_numpy()[None, :]) / np.timedelta64(1, "D")).astype(float)
    cols["merchant_credit_grade"] = m["credit_grade"].astype(object).fillna("unknown").to_numpy()
    cols["merchant_size_tier"] = m["size_tier"].astype(object).fillna("unknown").to_numpy()
    return grid.long(cols, "merchant_id", active)


def compute_activity(orders: pd.DataFrame, key: str, prefix: str) -> pd.DataFrame:
    """Per buyer / device / IP: one row per order and per arriving chargeback, holding the state after it.

    Velocity counts orders in (t - 1 h, t] and (t - 24 h, t]; chargebacks count fraud labels reported at or
    before t. The entity's last row also carries its recent order times and amounts (the last 24 h, as epoch
    seconds) so that `push_order_velocity` can update the counts exactly when new orders arrive.
    """
    od = orders[orders[key].notna()].copy() if key in orders else orders.iloc[:0].copy()
    od[key] = od[key].astype(str)
    od["ordered_at"] = _naive(od["ordered_at"])
    od = od.sort_values([key, "ordered_at"], kind="mergesort")
    codes, uniques = pd.factorize(od[key], sort=True)
    sec = (od["ordered_at"].astype("int64") // 10**9).to_numpy()
    base = sec.min() if len(sec) else 0
    shift = np.int64(1) << np.int64(34)
    okey = codes.astype(np.int64) * shift + (sec - base)  # sorted: codes ascending, then time
    amounts = od["amount"].astype(float).to_numpy()
    cum_amount = np.concatenate([[0.0], np.cumsum(amounts)])
    mism = country_mismatch(od).fillna(0.0).to_numpy()
    cum_mism = np.concatenate([[0.0], np.cumsum(mism)])
    # chargeback arrivals of this entity
    if "is_fraud" in od and "fraud_reported_at" in od:
        pos = od[od["is_fraud"].astype("boolean").fillna(False).astype(bool) & od["fraud_reported_at"].notna()]
        rcodes = pd.Index(uniques).get_indexer(pos[key])
        # rounded up: a label is never visible in a row stamped before it arrived
        rsec = -((-_naive(pos["fraud_reported_at"]).astype("int64")) // 10**9).to_numpy()
        rkey = np.sort(rcodes.astype(np.int64) * shift + (rsec - base))
    else:
        rkey = np.array([], dtype=np.int64)
    # rows: every order time and every chargeback arrival
    rows = np.unique(np.concatenate([okey, rkey]))
    row_code = rows // shift
    first = row_code * shift  # the entity's first possible key
    upto = np.searchsorted(okey, rows, side="right")
    start_all = np.searchsorted(okey, first, side="left")
    out = pd.DataFrame({key: np.asarray(uniques)[row_code],
                        "event_timestamp": _utc(pd.Series(pd.to_datetime((rows - first + base) * 10**9)))})
    for label, secs in (("1h", 3600), ("24h", 86400)):
        lo = np.maximum(np.searchsorted(okey, rows - secs, side="right"), start_all)
        out[f"{prefix}_orders_{label}"] = (upto - lo).astype(float)
        if label == "24h":
            out[f"{prefix}_amount_24h"] = cum_amount[upto] - cum_amount[lo]
    total = (upto - start_all).astype(float)
    out[f"{prefix}_orders_total"] = total
    out[f"{prefix}_amount_mean"] = _safe_div(cum_amount[upto] - cum_amount[start_all], total)
    out[f"{prefix}_chargebacks_known"] = (np.searchsorted(rkey, rows, side="right")
                                          - np.searchsorted(rkey, first, side="left")).astype(float)
    out[f"{prefix}_mismatch_share"] = _safe_div(cum_mism[upto] - cum_mism[start_all], total)
    # recent orders (last 24 h before the entity's last row) as "seconds:amount;...", only on that last row
    last = np.r_[row_code[1:] != row_code[:-1], True] if len(rows) else np.array([], dtype=bool)
    lo_all = np.maximum(np.searchsorted(okey, rows - 86400, side="right"), start_all)
    lengths = np.where(last, upto - lo_all, 0)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.arange(offsets[-1]) - np.repeat(offsets[:-1] - lo_all, lengths)
    state = np.full(len(rows), "", dtype=object)
    if len(flat):
        tokens = pd.Series(sec[flat].astype(np.int64).astype(str)) + ":" + pd.Series(
            np.char.mod("%.4f", amounts[flat]))
        joined = tokens.groupby(np.repeat(np.arange(len(rows)), lengths)).agg(";".join)
        state[joined.index.to_numpy()] = joined.to_numpy()
    out[f"{prefix}_recent_orders"] = state
    return out


# ----------------------------------------------------------------------------- driver

ACTIVITY_KEYS = {"buyer_activity": ("buyer_id", "buyer"), "device_activity": ("device_id", "device"),
                 "ip_activity": ("ip", "ip")}


def compute_view_frames(tables: dict[str, pd.DataFrame], cfg: FeaturesConfig, frequency: str = "D",
                        progress: Progress | None = None, client: Any | None = None) -> dict[str, pd.DataFrame]:
    """Every feature view's source frame from the canonical tables (no IO). With a Dask `client`, the views that
    split by entity (demand_series by SKU, risk_merchant and the activity views by their key) are computed on
    the cluster by the same functions (training.distributed: rows equal to the single-process ones, tested)."""
    say = progress or (lambda _msg: None)
    out: dict[str, pd.DataFrame] = {}
    if client is not None:
        from training.distributed import demand_series_dask, risk_features_dask

        say(f"  on Dask ({len(client.scheduler_info().get('workers', {}))} workers): demand_series, risk_merchant, "
            "activity views")
        if "daily_sales" in tables and "skus" in tables:
            t0 = time.perf_counter()
            out["demand_series"] = demand_series_dask(tables["daily_sales"], tables["skus"], cfg, frequency,
                                                      client=client)
            say(f"  demand_series: {len(out['demand_series']):,} rows in {time.perf_counter() - t0:.1f}s (Dask)")
        orders = tables.get("orders")
        if orders is not None and len(orders):
            t0 = time.perf_counter()
            views = ("risk_merchant", *ACTIVITY_KEYS) if "merchants" in tables else tuple(ACTIVITY_KEYS)
            out.update(risk_features_dask(orders, tables.get("merchants"), tables.get("shipments"), cfg, views=views,
                                          client=client))
            say(f"  {', '.join(views)}: {sum(len(out[v]) for v in views):,} rows in {time.perf_counter() - t0:.1f}s (Dask)")

    def timed(name: str, fn: Callable[[], pd.DataFrame]) -> None:
        t0 = time.perf_counter()
        out[name] = fn()
        say(f"  {name}: {len(out[name]):,} rows in {time.perf_counter() - t0:.1f}s")

    if "daily_sales" in tables and "skus" in tables and "demand_series" not in out:
        timed("demand_series", lambda: compute_demand_series(tables["daily_sales"], tables["skus"], cfg, frequency))
    shipments = tables.get("shipments")
    orders = tables.get("orders")
    if shipments is not None and len(shipments):
        timed("delay_lane", lambda: compute_delay_lane(shipments, cfg))
        timed("delay_carrier", lambda: compute_delay_carrier(shipments, cfg))
    if orders is not None and len(orders):
        timed("category_norms", lambda: compute_category_norms(
            shipments if shipments is not None else orders.iloc[:0], orders))
        if "merchants" in tables and "risk_merchant" not in out:
            timed("risk_merchant", lambda: compute_risk_merchant(orders, tables["merchants"], shipments, cfg))
        for view, (key, prefix) in ACTIVITY_KEYS.items():
            if view not in out:
                timed(view, lambda key=key, prefix=prefix: compute_activity(orders, key, prefix))
    return out


def write_feature_source(df: pd.DataFrame, path: Path, metadata: dict) -> Path:
    """Write a feature-view source atomically, without pandas' schema metadata (Feast's dask reader cannot parse
    the pandas dtype names of Arrow list columns; the Arrow types themselves carry everything)."""
    from features.offline import write_parquet_atomic

    return write_parquet_atomic(df, path, metadata, pandas_metadata=False)


def _compute_on_cluster_if_enabled(tables: dict[str, pd.DataFrame], cfg: FeaturesConfig, frequency: str,
                                   progress: Progress | None) -> dict[str, pd.DataFrame]:
    """compute_view_frames on the active Dask client, or on a new one when Dask is enabled ($TRADECAST_DASK,
    $DASK_SCHEDULER, the `shared` profile); in this process otherwise."""
    from training.distributed import active_client, dask_client, dask_enabled

    client = active_client()
    if client is not None or not dask_enabled():
        return compute_view_frames(tables, cfg, frequency, progress, client=client)
    with dask_client() as client:
        return compute_view_frames(tables, cfg, frequency, progress, client=client)


def compute_features(config: FeaturesConfig | None = None, progress: Progress | None = None,
                     tables: dict[str, pd.DataFrame] | None = None) -> dict[str, int]:
    """Compute every feature-view source from the offline store (or `tables`) and write it under
    $TRADECAST_HOME/features/<view>.parquet (atomic per file). Returns rows written per view."""
    from features.offline import read_table, table_exists, table_metadata
    from tradecast.errors import TradecastError
    from tradecast.paths import feature_data_dir

    cfg = config or load_features_config()
    frequency = "D"
    if tables is None:
        names = ("merchants", "skus", "daily_sales", "shipments", "orders")
        missing = [n for n in names if not table_exists(n)]
        if len(missing) == len(names):
            raise TradecastError("the offline store holds no canonical tables; run `tradecast data generate` "
                                 "or `tradecast data ingest` first")
        tables = {n: read_table(n) for n in names if n not in missing}
        frequency = table_metadata("daily_sales").get("frequency", "D") if "daily_sales" in tables else "D"
    frames = _compute_on_cluster_if_enabled(tables, cfg, frequency, progress)
    written = {}
    for view, frame in frames.items():
        write_feature_source(frame, feature_data_dir() / f"{view}.parquet", {"view": view, "rows": len(frame)})
        written[view] = len(frame)
    return written
