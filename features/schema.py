"""Canonical tables (DESIGN.md): columns, types, ranges and keys, and a validator that reports every problem.

Every source (synthetic generator, a user's files, a public data set) is mapped onto these tables.
`validate_table` returns all problems at once, each naming the column and example rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

Kind = Literal["str", "int", "float", "bool", "datetime"]

# Markets are destination countries; each belongs to one region that shares demand and logistics traits.
MARKET_REGION: dict[str, str] = {
    "ID": "sea", "TH": "sea", "VN": "sea", "PH": "sea", "MY": "sea", "SG": "sea",
    "DE": "europe", "FR": "europe", "ES": "europe", "IT": "europe", "NL": "europe", "GB": "europe",
    "US": "north_america",
    "SA": "middle_east", "AE": "middle_east",
    "BR": "latam", "MX": "latam",
}
MARKETS: tuple[str, ...] = tuple(MARKET_REGION)
REGIONS: tuple[str, ...] = ("sea", "europe", "north_america", "middle_east", "latam")
CATEGORIES: tuple[str, ...] = (
    "beauty", "apparel", "electronics_3c", "home", "smart_home", "mother_baby", "health", "food", "toys",
)
SKU_TIERS: tuple[str, ...] = ("hit", "potential", "long_tail")
MODES: tuple[str, ...] = ("air", "sea", "rail", "express")
CUSTOMS_CHANNELS: tuple[str, ...] = ("fast_lane", "standard", "inspection")
CREDIT_GRADES: tuple[str, ...] = ("A", "B", "C", "D", "E")
FREQUENCIES: tuple[str, ...] = ("D", "W")
# Fraud labels (chargebacks) arrive 30-90 days after the order: an order is a known negative only after this.
FRAUD_LABEL_WINDOW_DAYS = 90
# Dates outside this window are almost always parse errors (epoch zero, two-digit years, numbers read as dates).
DATE_MIN = pd.Timestamp("1980-01-01")
DATE_MAX = pd.Timestamp("2100-01-01")


@dataclass(frozen=True)
class Column:
    """One canonical column: type, whether it must be present and non-null, and its allowed values."""

    name: str
    kind: Kind
    required: bool = True
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None
    doc: str = ""


@dataclass(frozen=True)
class TableSchema:
    """A canonical table: its columns, primary key and event-time column."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    time_column: str | None = None
    references: dict[str, str] = field(default_factory=dict)  # column -> referenced table

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


MERCHANTS = TableSchema(
    name="merchants",
    key=("merchant_id",),
    time_column="registered_at",
    columns=(
        Column("merchant_id", "str", doc="merchant identifier"),
        Column("size_tier", "str", allowed=("small", "medium", "large", "brand")),
        Column("registered_at", "datetime", doc="registration date on the marketplace"),
        Column("home_cluster", "str", doc="industrial cluster, e.g. shenzhen_3c, hangzhou_apparel, yiwu_small_goods"),
        Column("marketplace", "str", doc="main sales channel, e.g. shopee, tiktok_shop, amazon"),
        Column("credit_grade", "str", allowed=CREDIT_GRADES, doc="5-level credit grade, A best"),
        Column("credit_quality", "float", required=False, min=0, max=1,
               doc="latent credit quality (ground truth of the generator; never a model feature)"),
    ),
)

SKUS = TableSchema(
    name="skus",
    key=("sku_id",),
    time_column="launch_date",
    references={"merchant_id": "merchants"},
    columns=(
        Column("sku_id", "str"),
        Column("merchant_id", "str"),
        Column("category", "str", allowed=CATEGORIES),
        Column("price", "float", min=0.01, doc="list price, USD"),
        Column("launch_date", "datetime"),
        Column("tier", "str", allowed=SKU_TIERS),
        Column("seasonal", "bool"),
        Column("hs_code", "str", doc="6-digit HS code of the product"),
        Column("cold_chain", "bool", required=False),
        Column("halal_certified", "bool", required=False),
        Column("high_value", "bool", required=False),
        Column("dangerous_goods", "bool", required=False),
    ),
)

DAILY_SALES = TableSchema(
    name="daily_sales",
    key=("date", "sku_id", "market"),
    time_column="date",
    references={"sku_id": "skus"},
    columns=(
        Column("date", "datetime", doc="the day (or the week's first day for weekly data)"),
        Column("sku_id", "str"),
        Column("market", "str", allowed=MARKETS),
        Column("units", "float", min=0, doc="units sold (censored on stock-out days)"),
        Column("price", "float", required=False, min=0.01, doc="selling price before discount, USD"),
        Column("discount", "float", required=False, min=0, max=0.95, doc="fractional discount off price"),
        Column("promotion_event", "str", required=False, doc="named promotion (e.g. double_11) or null"),
        Column("live_sessions", "int", required=False, min=0, doc="live-stream sessions featuring the SKU"),
        Column("live_viewers", "int", required=False, min=0),
        Column("stock_out", "bool", required=False, doc="stock ran out: units are censored demand"),
    ),
)

SHIPMENTS = TableSchema(
    name="shipments",
    key=("shipment_id",),
    time_column="created_at",
    columns=(
        Column("shipment_id", "str"),
        Column("created_at", "datetime"),
        Column("origin_warehouse", "str", doc="e.g. CN-SZX hub or an overseas warehouse such as MY-KUL"),
        Column("destination_market", "str", allowed=MARKETS),
        Column("lane", "str", doc="origin_warehouse>destination_market"),
        Column("mode", "str", allowed=MODES),
        Column("carrier", "str"),
        Column("weight_kg", "float", min=0.001),
        Column("declared_value", "float", required=False, min=0, doc="customs declared value, USD"),
        Column("hs_code", "str", required=False),
        Column("category", "str", required=False, allowed=CATEGORIES),
        Column("merchant_id", "str", required=False),
        Column("promised_days", "float", required=False, min=0.1),
        Column("customs_channel", "str", required=False, allowed=CUSTOMS_CHANNELS),
        # outcomes: unknown (null) until the shipment clears customs / is delivered
        Column("clearance_hours", "float", required=False, min=0),
        Column("transit_days", "float", required=False, min=0),
        Column("delivered_at", "datetime", required=False),
        Column("late", "bool", required=False, doc="actual transit days > promised days"),
    ),
)

ORDERS = TableSchema(
    name="orders",
    key=("order_id",),
    time_column="ordered_at",
    columns=(
        Column("order_id", "str"),
        Column("ordered_at", "datetime"),
        Column("buyer_id", "str"),
        Column("account_created_at", "datetime", required=False),
        Column("merchant_id", "str"),
        Column("sku_id", "str", required=False),
        Column("category", "str", required=False, allowed=CATEGORIES),
        Column("market", "str", allowed=MARKETS),
        Column("quantity", "int", required=False, min=1),
        Column("amount", "float", min=0, doc="order amount, USD"),
        Column("payment_method", "str", required=False),
        Column("ip", "str", required=False),
        Column("device_id", "str", required=False),
        Column("ip_country", "str", required=False),
        Column("card_country", "str", required=False),
        Column("shipping_country", "str", required=False),
        Column("declared_value", "float", required=False, min=0, doc="customs declared value, USD"),
        Column("hs_code", "str", required=False, doc="HS code on the customs declaration"),
        Column("item_description", "str", required=False, doc="declared goods description"),
        # outcomes: arrive late (chargebacks 30-90 days after the order; customs findings)
        Column("is_fraud", "bool", required=False),
        Column("fraud_reported_at", "datetime", required=False, doc="when the fraud label arrived"),
        Column("is_compliance_issue", "bool", required=False),
        Column("compliance_reported_at", "datetime", required=False),
    ),
)

TABLES: dict[str, TableSchema] = {t.name: t for t in (MERCHANTS, SKUS, DAILY_SALES, SHIPMENTS, ORDERS)}


@dataclass(frozen=True)
class Problem:
    """One validation problem: which column, what is wrong, and a few example row numbers."""

    column: str
    message: str
    rows: tuple[int, ...] = ()

    def __str__(self) -> str:
        where = f" (e.g. rows {', '.join(map(str, self.rows))})" if self.rows else ""
        return f"column '{self.column}': {self.message}{where}"


def get_schema(table: str) -> TableSchema:
    """Schema of a canonical table, with an error that lists the valid names."""
    from tradecast.errors import TradecastError

    if table not in TABLES:
        raise TradecastError(f"unknown table '{table}': choose one of {', '.join(TABLES)}")
    return TABLES[table]


def _examples(mask: pd.Series | np.ndarray, limit: int = 5) -> tuple[int, ...]:
    idx = np.flatnonzero(np.asarray(mask))[:limit]
    return tuple(int(i) for i in idx)


def coerce_column(series: pd.Series, kind: Kind) -> tuple[pd.Series, pd.Series]:
    """Convert a column to the canonical dtype; returns (converted, mask of values that failed to convert)."""
    was_null = series.isna()
    if kind == "str":
        out = series.astype("string")
        # A blank text cell is an empty value, not an id or a name.
        blank = out.notna() & (out.str.strip() == "")
        out = out.mask(blank.fillna(False).astype(bool))
        was_null = was_null | blank.fillna(False).astype(bool).to_numpy()
    elif kind in ("int", "float"):
        out = pd.to_numeric(series, errors="coerce")
        if pd.api.types.is_float_dtype(out):
            out = out.where(np.isfinite(out.astype("float64")) | out.isna())  # inf is not a valid measurement
        if kind == "int":
            bad_frac = out.notna() & (out != np.round(out))
            out = out.where(~bad_frac)
            out = out.astype("Int64")
        else:
            out = out.astype("float64")
    elif kind == "bool":
        if pd.api.types.is_bool_dtype(series):
            out = series.astype("boolean")
        else:
            text = series.astype("string").str.strip().str.lower()
            mapping = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False,
                       "y": True, "n": False, "1.0": True, "0.0": False}
            out = text.map(mapping).astype("boolean")
    elif kind == "datetime":
        if pd.api.types.is_datetime64_any_dtype(series):
            out = series
        else:
            # utc=True: text with mixed UTC offsets still parses (to UTC); naive text is taken as UTC already.
            out = pd.to_datetime(series, errors="coerce", format="mixed", utc=True)
        if getattr(out.dt, "tz", None) is not None:
            out = out.dt.tz_convert("UTC").dt.tz_localize(None)
        out = out.astype("datetime64[ns]")
    else:  # pragma: no cover - Kind is closed
        raise ValueError(kind)
    failed = out.isna() & ~was_null
    return out, failed


def validate_table(table: str, df: pd.DataFrame, known: dict[str, set[str]] | None = None) -> tuple[pd.DataFrame, list[Problem]]:
    """Coerce `df` to the canonical schema of `table` and collect every problem.

    Returns the coerced frame (canonical column order, optional columns added as null) and the problems;
    callers must not write the frame when problems is non-empty. `known` maps referenced table names to
    their keys, to check references such as skus.merchant_id -> merchants.
    """
    schema = get_schema(table)
    problems: list[Problem] = []
    unknown = [c for c in df.columns if c not in schema.column_names]
    for name in unknown:
        problems.append(Problem(name, f"not a column of '{table}' (expected: {', '.join(schema.column_names)})"))
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    df = df.reset_index(drop=True)
    for col in schema.columns:
        if col.name not in df.columns:
            if col.required:
                problems.append(Problem(col.name, "required column is missing"))
            # An all-null column of the canonical dtype (pd.NA can't be cast to float64/datetime64 directly).
            out[col.name] = pd.Series(index=out.index, dtype=_empty_dtype(col.kind))
            continue
        values, failed = coerce_column(df[col.name], col.kind)
        if failed.any():
            problems.append(Problem(col.name, f"{int(failed.sum())} value(s) are not a valid {col.kind}",
                                    _examples(failed)))
        if col.required and values.isna().any():
            missing = values.isna() & ~failed
            if missing.any():
                problems.append(Problem(col.name, f"{int(missing.sum())} required value(s) are empty", _examples(missing)))
        if col.min is not None:
            low = values.notna() & (values.astype("float64") < col.min)
            if low.any():
                problems.append(Problem(col.name, f"{int(low.sum())} value(s) below the minimum {col.min}", _examples(low)))
        if col.max is not None:
            high = values.notna() & (values.astype("float64") > col.max)
            if high.any():
                problems.append(Problem(col.name, f"{int(high.sum())} value(s) above the maximum {col.max}", _examples(high)))
        if col.kind == "datetime":
            odd = values.notna() & ((values < DATE_MIN) | (values >= DATE_MAX))
            if odd.any():
                problems.append(Problem(col.name, f"{int(odd.sum())} date(s) outside {DATE_MIN.date()}..{DATE_MAX.date()} "
                                        "(likely a parse error)", _examples(odd)))
        if col.allowed is not None:
            bad = values.notna() & ~values.isin(col.allowed)
            if bad.any():
                seen = sorted(set(values[bad].astype(str)))[:5]
                problems.append(Problem(col.name, f"{int(bad.sum())} value(s) not allowed: {seen}; allowed: {list(col.allowed)}",
                                        _examples(bad)))
        out[col.name] = values
    key = [k for k in schema.key if k in df.columns]
    if len(key) == len(schema.key) and len(out):
        # Rows with an empty key part are already reported as empty required values.
        dup = out.duplicated(subset=list(schema.key), keep="first") & out[list(schema.key)].notna().all(axis=1)
        if dup.any():
            problems.append(Problem("+".join(schema.key), f"{int(dup.sum())} duplicate key(s)", _examples(dup)))
    for column, ref_table in schema.references.items():
        if known and ref_table in known and column in df.columns:
            orphan = out[column].notna() & ~out[column].isin(known[ref_table])
            if orphan.any():
                problems.append(Problem(column, f"{int(orphan.sum())} value(s) not found in table '{ref_table}'",
                                        _examples(orphan)))
    return out, problems


def _empty_dtype(kind: Kind) -> str:
    return {"str": "string", "int": "Int64", "float": "float64", "bool": "boolean", "datetime": "datetime64[ns]"}[kind]
