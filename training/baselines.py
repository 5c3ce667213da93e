"""Simple baselines every report shows beside the model, scored on the same backtest folds.

demand: seasonal naive and moving average from the sales history before the forecast origin;
delay:  lane x mode historical median (and P90, late rate), falling back to mode, then overall;
risk:   a rules score from order velocity, country mismatches and account age.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

SERIES = ["sku_id", "market"]


def period_delta(frequency: str) -> pd.Timedelta:
    """Length of one period: a day for daily data, a week for weekly data."""
    return pd.Timedelta(days=7 if frequency == "W" else 1)


def seasonal_naive(history: pd.DataFrame, queries: pd.DataFrame, season: int, frequency: str = "D") -> np.ndarray:
    """Units `season` periods (repeated as needed) before each query's target, never on or after its as-of time.

    history: sku_id, market, date, units. queries: sku_id, market, as_of, target_date, where `as_of` is the first
    unobserved period (the feature store's convention: an example stamped T sees sales strictly before T) and
    h = (target - as_of) / period + 1 >= 1. The forecast is y(target - season * ceil(h / season)); a missing
    value (no row, e.g. a new SKU) is 0 units.
    """
    period = period_delta(frequency)
    h = ((queries["target_date"] - queries["as_of"]) / period).round().astype("int64").clip(lower=0) + 1
    lag_periods = season * np.ceil(h / season).astype("int64")
    lookup = queries[SERIES].copy()
    lookup["date"] = queries["target_date"] - lag_periods.to_numpy() * period
    values = history[SERIES + ["date", "units"]].drop_duplicates(SERIES + ["date"])
    merged = lookup.merge(values, on=SERIES + ["date"], how="left")
    return merged["units"].fillna(0.0).to_numpy(dtype="float64")


def moving_average(history: pd.DataFrame, queries: pd.DataFrame, window: int, frequency: str = "D") -> np.ndarray:
    """Mean units per period over the `window` periods strictly before each query's `as_of` (missing = 0)."""
    period = period_delta(frequency)
    h = history[SERIES + ["date", "units"]].sort_values(SERIES + ["date"])
    # cumulative units per series; window mean = (cum at as_of-1 - cum at as_of-1-window) / window
    h = h.assign(cum=h.groupby(SERIES, sort=False, observed=True)["units"].cumsum())
    h = h[SERIES + ["date", "cum"]]
    keys = queries[SERIES].copy()
    keys["_row"] = np.arange(len(queries))
    last_seen = queries["as_of"] - period
    at_end = _asof(h, keys.assign(date=last_seen.to_numpy()))
    before = _asof(h, keys.assign(date=(last_seen - window * period).to_numpy()))
    return np.clip((at_end - before) / window, 0, None)


def _asof(cum: pd.DataFrame, keys: pd.DataFrame) -> np.ndarray:
    """Cumulative units of each key's series at the latest date <= key date (0 before the first row)."""
    left = keys.sort_values("date")
    right = cum.sort_values("date")
    merged = pd.merge_asof(left, right, on="date", by=SERIES, direction="backward")
    merged = merged.sort_values("_row")
    return merged["cum"].fillna(0.0).to_numpy(dtype="float64")


class LaneMedianBaseline(RegressorMixin, BaseEstimator):
    """Historical transit-days median and P90 and late rate per lane x mode; falls back to mode, then overall."""

    def __init__(self, keys: tuple[str, ...] = ("lane", "mode"), fallback: tuple[str, ...] = ("mode",)):
        self.keys = keys
        self.fallback = fallback

    def fit(self, X: pd.DataFrame, y: pd.Series, late: pd.Series | None = None) -> "LaneMedianBaseline":
        df = X[list(self.keys)].astype(str).assign(_y=np.asarray(y, dtype="float64"))
        df["_late"] = np.asarray(late, dtype="float64") if late is not None else np.nan
        self.table_ = self._summary(df, list(self.keys))
        self.fallback_table_ = self._summary(df, list(self.fallback)) if self.fallback else None
        self.overall_ = (float(df["_y"].median()), float(df["_y"].quantile(0.9)), float(df["_late"].mean()))
        return self

    @staticmethod
    def _summary(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        g = df.groupby(keys, observed=True)
        return pd.DataFrame({"p50": g["_y"].median(), "p90": g["_y"].quantile(0.9), "p_late": g["_late"].mean()})

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """p50, p90 and p_late per row."""
        keys = X[list(self.keys)].astype(str)
        out = keys.merge(self.table_, left_on=list(self.keys), right_index=True, how="left")
        if self.fallback_table_ is not None:
            fb = keys[list(self.fallback)].merge(self.fallback_table_, left_on=list(self.fallback), right_index=True,
                                                 how="left")
            for c in ("p50", "p90", "p_late"):
                out[c] = out[c].fillna(fb[c])
        for c, v in zip(("p50", "p90", "p_late"), self.overall_):
            out[c] = out[c].fillna(v)
        return out[["p50", "p90", "p_late"]].set_axis(X.index)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_frame(X)["p50"].to_numpy()


def rules_risk_score(frame: pd.DataFrame, velocity_columns: list[str], new_account_days: int = 7) -> np.ndarray:
    """A transparent fraud rules score: country mismatches + new account + order velocity (higher = riskier).

    Each mismatch (IP vs card country, card vs shipping country) and a new account add 1; velocity adds up to
    1 per velocity column (count / 10, capped), which also breaks ties between otherwise equal orders.
    """
    score = np.zeros(len(frame))
    for a, b in (("ip_country", "card_country"), ("card_country", "shipping_country")):
        if a in frame and b in frame:
            score += (frame[a].astype("string") != frame[b].astype("string")).fillna(False).to_numpy(dtype="float64")
    if "account_age_days" in frame:
        age = pd.to_numeric(frame["account_age_days"], errors="coerce").fillna(1e9).to_numpy()
        score += (age < new_account_days).astype("float64")
    for col in velocity_columns:
        if col in frame:
            v = pd.to_numeric(frame[col], errors="coerce").fillna(0).to_numpy(dtype="float64")
            score += np.clip(v / 10.0, 0, 1)
    return score
