"""Request and response models of the prediction endpoints (pydantic, extra fields forbidden).

Field names follow the canonical tables in features/schema.py; ranges reject what no model was trained on
(negative weights, horizons outside 1-90 days, unknown markets or modes). Every validation error names the
field it is about. Examples shown in the OpenAPI schema are the files in serving/examples/.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from features.schema import CATEGORIES, CUSTOMS_CHANNELS, MARKETS, MODES

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MAX_HORIZON_DAYS = 90

Market = Literal[MARKETS]  # type: ignore[valid-type]
Mode = Literal[MODES]  # type: ignore[valid-type]
Category = Literal[CATEGORIES]  # type: ignore[valid-type]
CustomsChannel = Literal[CUSTOMS_CHANNELS]  # type: ignore[valid-type]
Identifier = Field(min_length=1, max_length=128)
# field -> (lowest, highest, wording) for the per-day planned values of a demand request
PER_DAY_RANGES: dict[str, tuple[float, float, str]] = {
    "price": (0.0, 1e7, "greater than 0 and at most 1e7 (USD)"),
    "discount": (0.0, 0.95, "between 0 and 0.95"),
    "promotion_event": (0.0, 0.0, "a promotion name"),
    "live_sessions": (0, 1000, "between 0 and 1000"),
}


@lru_cache(maxsize=None)
def load_example(name: str) -> dict[str, Any]:
    """The example request body serving/examples/<name>.json."""
    return json.loads((EXAMPLES_DIR / f"{name}.json").read_text())


def _example_extra(name: str):
    """json_schema_extra that adds the example file lazily (only when the schema is generated)."""

    def extra(schema: dict[str, Any], _cls: type) -> None:
        schema["example"] = load_example(name)

    return extra


EARLIEST, LATEST = datetime(2000, 1, 1), datetime(2100, 1, 1)


def _naive_utc(value: Optional[datetime]) -> Optional[datetime]:
    """Timestamps are stored as naive UTC (like the canonical tables); aware inputs are converted.
    Dates outside 2000-2099 are refused (no model has seen them and they overflow nanosecond timestamps)."""
    if value is None:
        return value
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)")
    return value


class RequestModel(BaseModel):
    """Base of every request: unknown fields are errors, NaN and infinity are rejected."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)


PerDayFloat = Union[float, list[float]]


class DemandRequest(RequestModel):
    """Forecast daily units of one SKU in one market for the next `horizon_days` days."""

    model_config = ConfigDict(json_schema_extra=_example_extra("forecast_demand"))

    sku_id: str = Identifier
    market: Market
    horizon_days: int = Field(ge=1, le=MAX_HORIZON_DAYS, description="days to forecast, 1-90")
    start_date: Optional[date] = Field(None, description="first forecast day (default: tomorrow, UTC)")
    price: Optional[Union[float, list[float]]] = Field(
        None, description="planned selling price in USD: one value for every day or one per day")
    discount: Optional[Union[float, list[float]]] = Field(
        None, description="planned fractional discount 0-0.95: one value or one per day")
    promotion_event: Optional[Union[str, list[Optional[str]]]] = Field(
        None, description="named promotion (e.g. double_11): one value or one per day (null = none)")
    live_sessions: Optional[Union[int, list[int]]] = Field(
        None, description="planned live-stream sessions: one value or one per day")

    @field_validator("start_date")
    @classmethod
    def _start_in_range(cls, value: Optional[date]) -> Optional[date]:
        if value is not None and not EARLIEST.date() <= value < LATEST.date() - timedelta(days=MAX_HORIZON_DAYS):
            raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and 2099-10-01")
        return value

    @field_validator("price", "discount", "promotion_event", "live_sessions")
    @classmethod
    def _per_day_values(cls, value, info: ValidationInfo):
        """Check ranges and that a per-day list has exactly `horizon_days` values."""
        if value is None:
            return value
        values = value if isinstance(value, list) else [value]
        low, high, text = PER_DAY_RANGES[info.field_name]
        bad = [v for v in values if v is not None and not isinstance(v, str) and not (low <= v <= high)]
        if bad or (info.field_name == "price" and any(v is not None and v <= 0 for v in values)):
            raise ValueError(f"must be {text}")
        if info.field_name == "promotion_event" and any(v is not None and len(v) > 64 for v in values):
            raise ValueError("promotion names are at most 64 characters")
        horizon = info.data.get("horizon_days")
        if isinstance(value, list) and horizon is not None and len(value) != horizon:
            raise ValueError(f"{len(value)} per-day values given but horizon_days is {horizon}")
        return value


class DelayRequest(RequestModel):
    """A shipment as known when it is created."""

    model_config = ConfigDict(json_schema_extra=_example_extra("predict_delay"))

    shipment_id: Optional[str] = Field(None, min_length=1, max_length=128,
                                       description="generated when absent")
    origin_warehouse: str = Field(min_length=1, max_length=64, description="e.g. CN-SZX or MY-KUL")
    destination_market: Market
    mode: Mode
    carrier: str = Field(min_length=1, max_length=64)
    weight_kg: float = Field(ge=0.001, le=100_000, description="kg, at least 0.001")
    declared_value: float = Field(ge=0, le=1e8, description="customs declared value, USD")
    hs_code: str = Field(min_length=2, max_length=12, pattern=r"^[0-9.]+$")
    category: Optional[Category] = None
    promised_days: float = Field(ge=0.1, le=180, description="days promised to the buyer, 0.1-180")
    customs_channel: Optional[CustomsChannel] = Field(
        None, description="fast_lane, standard or inspection; null/absent when no customs step is known "
                          "(domestic delivery from an overseas warehouse, or not assigned yet), as in the training data")
    created_at: datetime

    _utc = field_validator("created_at")(classmethod(lambda cls, v: _naive_utc(v)))


class RiskRequest(RequestModel):
    """An order with its customs declaration."""

    model_config = ConfigDict(json_schema_extra=_example_extra("score_risk"))

    order_id: str = Identifier
    ordered_at: datetime
    buyer_id: str = Identifier
    account_created_at: Optional[datetime] = None
    merchant_id: str = Identifier
    sku_id: Optional[str] = Field(None, min_length=1, max_length=128)
    category: Optional[Category] = None
    market: Market
    amount: float = Field(ge=0, le=1e7, description="order amount, USD")
    quantity: int = Field(1, ge=1, le=100_000)
    payment_method: Optional[str] = Field(None, max_length=64)
    ip: Optional[str] = Field(None, max_length=64)
    device_id: Optional[str] = Field(None, max_length=128)
    ip_country: Optional[str] = Field(None, max_length=8)
    card_country: Optional[str] = Field(None, max_length=8)
    shipping_country: Optional[str] = Field(None, max_length=8)
    declared_value: Optional[float] = Field(None, ge=0, le=1e8, description="customs declared value, USD")
    hs_code: Optional[str] = Field(None, min_length=2, max_length=12, pattern=r"^[0-9.]+$")
    item_description: Optional[str] = Field(None, max_length=500)

    _utc = field_validator("ordered_at", "account_created_at")(classmethod(lambda cls, v: _naive_utc(v)))


# ---------------------------------------------------------------- responses


class ResponseModel(BaseModel):
    """Every answer names the model and version that produced it and whether defaults filled in features."""

    model_name: str
    model_version: str
    request_id: str
    defaults_used: bool = Field(description="a default feature value was used for an unknown entity")


class DemandDay(BaseModel):
    date: date
    p10: float
    p50: float
    p90: float


class DemandResponse(ResponseModel):
    sku_id: str
    market: str
    forecast: list[DemandDay]


class DelayResponse(ResponseModel):
    shipment_id: str
    transit_days_p50: float
    transit_days_p90: float
    p_late: float
    expected_delay_hours: float
    alert: bool = Field(description="likely to arrive more than 48 h after the promised date")


class RiskResponse(ResponseModel):
    order_id: str
    p_fraud: float
    p_compliance: float
    risk_level: str
    reasons: list[str]


class ItemError(BaseModel):
    """A batch item that failed validation: its position, the field and what is wrong."""

    index: int
    field: str
    error: str


REQUEST_MODELS: dict[str, type[RequestModel]] = {
    "demand": DemandRequest, "delay": DelayRequest, "risk": RiskRequest,
}
