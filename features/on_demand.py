"""Request-time features: pure `DataFrame -> DataFrame` functions.

Each function takes a frame holding the request fields (what the caller knows) and the batch features it
compares them against, and returns a new frame with only its output columns, all float64, one row per input
row (same index). Given a plain mapping of column -> array instead (the serving request path, where building
DataFrames costs more than the arithmetic), the same code returns a dict of float64 arrays. Missing inputs give NaN outputs, never an exception. The same functions back the Feast
on-demand views (features/feature_repo/definitions.py) and the training/online paths in features/store.py,
so training and serving compute them identically.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

# HS chapters (first two digits) that fit each product category; a declaration outside them is suspicious.
CATEGORY_HS_CHAPTERS: dict[str, frozenset[str]] = {
    "beauty": frozenset({"33", "34", "96"}),
    "apparel": frozenset({"42", "61", "62", "64", "65"}),
    "electronics_3c": frozenset({"84", "85"}),
    "home": frozenset({"39", "63", "69", "73", "82", "94"}),
    "smart_home": frozenset({"85", "94"}),
    "mother_baby": frozenset({"39", "40", "61", "95", "96"}),
    "health": frozenset({"21", "30", "33", "90"}),
    "food": frozenset({"04", "09", "17", "19", "20", "21"}),
    "toys": frozenset({"95"}),
}
# Words on export-control / prohibited lists and dangerous-goods words, matched case-insensitively.
CONTROL_KEYWORDS: tuple[str, ...] = (
    "drone", "encryption", "night vision", "thermal imaging", "laser", "gps jammer", "jammer", "replica",
    "counterfeit", "weapon", "knife", "ammunition", "ivory", "tobacco", "e-cigarette", "vape", "cbd",
    "prescription", "pharmaceutical", "surveillance", "spy camera",
)
DANGEROUS_KEYWORDS: tuple[str, ...] = (
    "lithium", "battery", "power bank", "flammable", "aerosol", "perfume", "nail polish", "magnet",
    "compressed", "corrosive", "explosive", "gas cylinder", "lighter",
)
NEW_ACCOUNT_DAYS = 7.0

ON_DEMAND_OUTPUTS: dict[str, list[str]] = {
    "demand_request": ["target_price_ratio", "expected_promo_lift", "expected_live_lift", "target_dow_factor",
                       "baseline_units"],
    "delay_request": ["promised_vs_lane_p90", "promised_minus_lane_median", "value_per_kg",
                      "value_per_kg_vs_category"],
    "risk_request": ["amount_vs_merchant_z", "amount_vs_merchant_p95", "amount_vs_buyer_mean",
                     "amount_vs_category_median", "declared_to_amount", "declared_ratio_vs_category",
                     "hs_category_mismatch", "control_keyword_flag", "dangerous_keyword_flag",
                     "ip_card_mismatch", "ip_shipping_mismatch", "card_shipping_mismatch", "new_account",
                     "buyer_account_age_days"],
}


import re

_CONTROL_RX = re.compile("|".join(k.replace(" ", r"\s+") for k in CONTROL_KEYWORDS))
_DANGEROUS_RX = re.compile("|".join(k.replace(" ", r"\s+") for k in DANGEROUS_KEYWORDS))

# Internals work on numpy arrays: these functions run per request in serving (a few rows) and on whole
# training sets (millions of rows), so per-operation pandas overhead matters at both ends.


Table = "pd.DataFrame | Mapping[str, Any]"


def n_rows(table: Table) -> int:
    """Rows of a frame or of a column -> values mapping (all columns the same length)."""
    if isinstance(table, pd.DataFrame):
        return len(table)
    return len(next(iter(table.values()))) if table else 0


def _values(df: Table, column: str) -> np.ndarray:
    col = df[column]
    return col.to_numpy() if isinstance(col, pd.Series) else np.asarray(col)


def _num(df: Table, column: str) -> np.ndarray:
    """A column as float64 (NaN when absent, null or not numeric)."""
    if column not in df:
        return np.full(n_rows(df), np.nan)
    values = _values(df, column)
    if values.dtype == np.float64:
        return values
    if values.dtype.kind in "iub":
        return values.astype("float64")
    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _text(df: Table, column: str) -> list[str]:
    """A column as stripped lower-case strings ('' when absent or null)."""
    if column not in df:
        return [""] * n_rows(df)
    return ["" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v).strip().lower()
            for v in _values(df, column).tolist()]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where the denominator is missing or not positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _flag(mask, known) -> np.ndarray:
    """1.0 / 0.0 where the inputs are known, NaN otherwise."""
    return np.where(np.asarray(known, dtype=bool), np.asarray(mask, dtype=bool).astype("float64"), np.nan)


def _frame(df: Table, columns: dict[str, np.ndarray]) -> "pd.DataFrame | dict[str, np.ndarray]":
    """The outputs as a frame on the input's index, or as a dict of arrays for a mapping input."""
    out = {k: np.asarray(v, dtype="float64") for k, v in columns.items()}
    return pd.DataFrame(out, index=df.index) if isinstance(df, pd.DataFrame) else out


def demand_request_features(df: pd.DataFrame) -> pd.DataFrame:
    """Planned conditions of the target day against the series' history.

    Inputs: request `price`, `discount`, `live_sessions`, `is_promotion` (0/1), `target_dow` (0=Monday);
    batch `price_median_28d`, `promo_lift`, `live_lift`, `units_mean_28d`, `dow_index_0..6`.
    """
    price = _num(df, "price")
    discount = np.nan_to_num(_num(df, "discount"), nan=0.0)
    promo = np.clip(np.nan_to_num(_num(df, "is_promotion"), nan=0.0), 0, 1)
    live = (np.nan_to_num(_num(df, "live_sessions"), nan=0.0) > 0).astype("float64")
    dow = _num(df, "target_dow")
    factor = np.full(n_rows(df), np.nan)
    for d in range(7):
        factor = np.where(dow == d, _num(df, f"dow_index_{d}"), factor)
    return _frame(df, {
        "target_price_ratio": _ratio(price * (1.0 - discount), _num(df, "price_median_28d")),
        "expected_promo_lift": promo * np.nan_to_num(_num(df, "promo_lift"), nan=1.0) + (1.0 - promo),
        "expected_live_lift": live * np.nan_to_num(_num(df, "live_lift"), nan=1.0) + (1.0 - live),
        "target_dow_factor": factor,
        "baseline_units": _num(df, "units_mean_28d") * np.nan_to_num(factor, nan=1.0),
    })


def delay_request_features(df: pd.DataFrame) -> pd.DataFrame:
    """The shipment's promise and goods value against the lane and category norms.

    Inputs: request `promised_days`, `weight_kg`, `declared_value`; batch `lane_transit_p90_28d`,
    `lane_transit_median_28d`, `cat_value_per_kg_median_91d`.
    """
    promised = _num(df, "promised_days")
    value_per_kg = _ratio(_num(df, "declared_value"), _num(df, "weight_kg"))
    return _frame(df, {
        "promised_vs_lane_p90": _ratio(promised, _num(df, "lane_transit_p90_28d")),
        "promised_minus_lane_median": promised - _num(df, "lane_transit_median_28d"),
        "value_per_kg": value_per_kg,
        "value_per_kg_vs_category": _ratio(value_per_kg, _num(df, "cat_value_per_kg_median_91d")),
    })


def hs_category_mismatch(hs_code: pd.Series, category: pd.Series) -> pd.Series:
    """1.0 where the HS chapter does not fit the product category, 0.0 where it does, NaN if either is unknown."""
    frame = pd.DataFrame({"h": hs_code.to_numpy(), "c": category.to_numpy()}, index=hs_code.index)
    chapters = [h[:2] for h in _text(frame, "h")]
    cats = _text(frame, "c")
    fits = [ch in CATEGORY_HS_CHAPTERS.get(c, ()) for ch, c in zip(chapters, cats)]
    known = [len(ch) == 2 and c in CATEGORY_HS_CHAPTERS for ch, c in zip(chapters, cats)]
    return pd.Series(_flag(~np.asarray(fits, dtype=bool), known), index=hs_code.index)


def _keyword(texts: list[str], rx: re.Pattern) -> np.ndarray:
    return _flag([bool(rx.search(t)) for t in texts], [t != "" for t in texts])


def keyword_flag(text: pd.Series, keywords: tuple[str, ...]) -> pd.Series:
    """1.0 where the lower-cased text contains any keyword, 0.0 otherwise, NaN where the text is missing."""
    rx = re.compile("|".join(k.replace(" ", r"\s+") for k in keywords))
    return pd.Series(_keyword(_text(pd.DataFrame({"t": text.to_numpy()}), "t"), rx), index=text.index)


def _mismatch(a: list[str], b: list[str]) -> np.ndarray:
    return _flag([x != y for x, y in zip(a, b)], [x != "" and y != "" for x, y in zip(a, b)])


def risk_request_features(df: pd.DataFrame) -> pd.DataFrame:
    """The order and its customs declaration against merchant, buyer and category norms.

    Inputs: request `amount`, `declared_value`, `account_age_days`, `hs_code`, `order_category`,
    `item_description`, `ip_country`, `card_country`, `shipping_country`; batch `merchant_amount_mean_91d`,
    `merchant_amount_std_91d`, `merchant_amount_p95_91d`, `buyer_amount_mean`, `cat_amount_median_91d`,
    `cat_declared_ratio_median_91d`.
    """
    amount = _num(df, "amount")
    std = np.clip(_num(df, "merchant_amount_std_91d"), 1.0, None)
    declared_ratio = _ratio(_num(df, "declared_value"), amount)
    chapters = [h[:2] for h in _text(df, "hs_code")]
    cats = _text(df, "order_category")
    desc = _text(df, "item_description")
    ip, card, ship = _text(df, "ip_country"), _text(df, "card_country"), _text(df, "shipping_country")
    age = _num(df, "account_age_days")
    return _frame(df, {
        "amount_vs_merchant_z": (amount - _num(df, "merchant_amount_mean_91d")) / std,
        "amount_vs_merchant_p95": _ratio(amount, _num(df, "merchant_amount_p95_91d")),
        "amount_vs_buyer_mean": _ratio(amount, _num(df, "buyer_amount_mean")),
        "amount_vs_category_median": _ratio(amount, _num(df, "cat_amount_median_91d")),
        "declared_to_amount": declared_ratio,
        "declared_ratio_vs_category": _ratio(declared_ratio, _num(df, "cat_declared_ratio_median_91d")),
        "hs_category_mismatch": _flag([ch not in CATEGORY_HS_CHAPTERS.get(c, ()) for ch, c in zip(chapters, cats)],
                                      [len(ch) == 2 and c in CATEGORY_HS_CHAPTERS for ch, c in zip(chapters, cats)]),
        "control_keyword_flag": _keyword(desc, _CONTROL_RX),
        "dangerous_keyword_flag": _keyword(desc, _DANGEROUS_RX),
        "ip_card_mismatch": _mismatch(ip, card),
        "ip_shipping_mismatch": _mismatch(ip, ship),
        "card_shipping_mismatch": _mismatch(card, ship),
        "new_account": _flag(age < NEW_ACCOUNT_DAYS, ~np.isnan(age)),
        "buyer_account_age_days": age,
    })


# Columns each function reads (request fields and batch features); callers may pass just these.
ON_DEMAND_INPUTS: dict[str, list[str]] = {
    "demand_request": ["price", "discount", "live_sessions", "is_promotion", "target_dow", "price_median_28d",
                       "promo_lift", "live_lift", "units_mean_28d", *[f"dow_index_{d}" for d in range(7)]],
    "delay_request": ["promised_days", "weight_kg", "declared_value", "lane_transit_p90_28d",
                      "lane_transit_median_28d", "cat_value_per_kg_median_91d"],
    "risk_request": ["amount", "declared_value", "account_age_days", "hs_code", "order_category", "item_description",
                     "ip_country", "card_country", "shipping_country", "merchant_amount_mean_91d",
                     "merchant_amount_std_91d", "merchant_amount_p95_91d", "buyer_amount_mean",
                     "cat_amount_median_91d", "cat_declared_ratio_median_91d"],
}

ON_DEMAND_FUNCTIONS = {
    "demand_request": demand_request_features,
    "delay_request": delay_request_features,
    "risk_request": risk_request_features,
}


def calendar_columns(dates: pd.Series) -> pd.DataFrame:
    """Calendar covariates of target days (known in advance): day of week (0=Monday), month, day of year."""
    d = pd.to_datetime(dates)
    return pd.DataFrame({"target_dow": d.dt.dayofweek.astype("float64"), "target_month": d.dt.month.astype("float64"),
                         "target_dayofyear": d.dt.dayofyear.astype("float64")}, index=dates.index)
