"""Plain prediction functions: validated requests -> request rows -> features -> model -> responses.

Everything here is vectorised over the items of a request (a single call is a batch of one), takes the
model and feature source as arguments, and returns plain dicts (the JSON answer) plus a `LoggedBatch`
for the prediction log. No HTTP, no globals: the BentoML service only calls these.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from serving.bundle import OUTPUT_COLUMNS, FeatureSource, FeatureVectors, ModelBundle
from serving.schemas import DelayRequest, DemandRequest, RiskRequest

# Default risk levels on max(p_fraud, p_compliance) when the model does not return its own level.
DEFAULT_RISK_LEVELS: dict[str, float] = {"low": 0.0, "medium": 0.2, "high": 0.5, "critical": 0.8}
ALERT_DELAY_HOURS = 48.0
DEMAND_DAY_FIELDS = ("price", "discount", "promotion_event", "live_sessions")


@dataclass
class ItemProblem:
    """One batch item that failed validation."""

    index: int
    field: str
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "error": self.error}


@dataclass
class LoggedBatch:
    """What the prediction log needs about one call of one family (turned into JSON off the request path).

    One row per logged record in each frame: per forecast day for demand, per item otherwise. The risk
    request path passes column -> array dicts instead of frames; the log thread encodes either column by
    column (serving.prediction_log).
    """

    family: str
    endpoint: str
    request_id: str
    model_name: str
    model_version: str
    logged_at: datetime
    item_index: np.ndarray
    inputs: pd.DataFrame | dict[str, np.ndarray]
    features: pd.DataFrame | dict[str, np.ndarray]
    outputs: pd.DataFrame | dict[str, np.ndarray]
    defaults_used: np.ndarray
    row_request_ids: np.ndarray | None = None  # per row, when coalesced single requests share one batch


@dataclass
class PredictionResult:
    """JSON-ready answers (one per valid item, in order) and the batch to log."""

    responses: list[dict[str, Any]]
    logged: LoggedBatch | None = None
    problems: list[ItemProblem] = field(default_factory=list)


def new_request_id() -> str:
    """A random request id (32 hex characters)."""
    return uuid.uuid4().hex


def describe_error(exc: ValidationError) -> tuple[str, str]:
    """(field, message) of the first problem in a pydantic error, the message naming every field."""
    parts = []
    first_field = ""
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        first_field = first_field or loc
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return first_field or "body", "; ".join(parts)


def validate_items(model: type[BaseModel], raw_items: Sequence[Any]) -> tuple[list[tuple[int, BaseModel]], list[ItemProblem]]:
    """Validate every batch item on its own: (index, request) for the good ones, a problem for the others."""
    good: list[tuple[int, BaseModel]] = []
    problems: list[ItemProblem] = []
    for index, raw in enumerate(raw_items):
        try:
            good.append((index, model.model_validate(raw)))
        except ValidationError as exc:
            field_name, message = describe_error(exc)
            problems.append(ItemProblem(index, field_name, message))
    return good, problems


# ------------------------------------------------------------------ request rows


def default_start_date(now: datetime | None = None) -> date:
    """Forecasts start tomorrow (UTC) unless the request says otherwise."""
    now = now or datetime.now(timezone.utc)
    return now.date() + timedelta(days=1)


def _per_day(value: Any, horizon: int) -> list[Any]:
    if isinstance(value, list):
        return value
    return [value] * horizon


def demand_rows(items: Sequence[DemandRequest], start: date) -> pd.DataFrame:
    """One row per item and forecast day: keys, target date, horizon (1 = first day) and planned values."""
    horizons = np.array([it.horizon_days for it in items], dtype=np.int64)
    item = np.repeat(np.arange(len(items)), horizons)
    first_row = np.concatenate([[0], np.cumsum(horizons)[:-1]])
    offset = np.arange(int(horizons.sum())) - np.repeat(first_row, horizons)
    starts = np.array([np.datetime64(it.start_date or start, "D") for it in items])
    frame = pd.DataFrame({
        "item": item,
        "sku_id": np.array([it.sku_id for it in items], dtype=object)[item],
        "market": np.array([it.market for it in items], dtype=object)[item],
        "date": (starts[item] + offset).astype("datetime64[ns]"),
        "horizon": offset + 1,
        "horizon_days": horizons[item],
    })
    for name in DEMAND_DAY_FIELDS:
        values = [v for it in items for v in _per_day(getattr(it, name), it.horizon_days)]
        column = pd.Series(values, dtype=object)
        if name != "promotion_event":
            column = pd.to_numeric(column, errors="coerce").astype("float64")
        frame[name] = column.to_numpy()
    return frame


def _column_values(items: Sequence[BaseModel], times: Sequence[str]) -> dict[str, np.ndarray]:
    """Request fields as column -> array (object for text, `times` as datetime64[ns]: naive UTC, NaT when absent)."""
    fields = list(type(items[0]).model_fields)
    data: dict[str, np.ndarray] = {}
    for f in fields:
        values = [getattr(it, f) for it in items]
        data[f] = np.array(values, dtype="datetime64[ns]") if f in times else _array(values)
    return data


def _array(values: list[Any]) -> np.ndarray:
    """Values as a 1-D array typed as a DataFrame column of them would be: int64 for whole numbers, float64 for
    numbers with None (-> NaN), object otherwise (all None stays None)."""
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.int64)
    if any(v is not None for v in values) and \
            all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _columns(items: Sequence[BaseModel], times: Sequence[str]) -> pd.DataFrame:
    """`_column_values` as a frame (built column-wise: cheaper than records for small batches)."""
    return pd.DataFrame(_column_values(items, times))


def delay_rows(items: Sequence[DelayRequest]) -> pd.DataFrame:
    """One row per shipment; a missing shipment_id is generated, `lane` is origin>destination."""
    frame = _columns(items, ("created_at",))
    frame["shipment_id"] = [sid if sid is not None else f"auto-{uuid.uuid4().hex[:16]}" for sid in frame["shipment_id"]]
    frame["lane"] = [f"{o}>{d}" for o, d in zip(frame["origin_warehouse"], frame["destination_market"])]
    return frame


RISK_TIMES = ("ordered_at", "account_created_at")


def risk_rows(items: Sequence[RiskRequest]) -> pd.DataFrame:
    """One row per order, timestamps as naive UTC."""
    return _columns(items, RISK_TIMES)


def risk_columns(items: Sequence[RiskRequest]) -> dict[str, np.ndarray]:
    """`risk_rows` as column -> array (the request path without DataFrames)."""
    return _column_values(items, RISK_TIMES)


# ------------------------------------------------------------------ model call


def score(model: ModelBundle, features: FeatureSource, family: str, rows: pd.DataFrame) -> tuple[FeatureVectors, pd.DataFrame]:
    """Look up features for the rows and run the model on request fields + features."""
    vectors = features.lookup(family, rows)
    # feature-source columns win: they hold the request fields as training saw them (e.g. 'unknown' category)
    kept = [c for c in rows.columns if c not in vectors.frame.columns]
    model_input = pd.concat([rows[kept].reset_index(drop=True), vectors.frame.reset_index(drop=True)], axis=1)
    outputs = model.predict(model_input)
    missing = [c for c in OUTPUT_COLUMNS[family] if c not in outputs.columns]
    if missing or len(outputs) != len(rows):
        raise RuntimeError(f"model {model.name} v{model.version} returned {len(outputs)} rows "
                           f"for {len(rows)} and lacks columns {missing}")
    return vectors, outputs.reset_index(drop=True)


def _positions(positions: Sequence[int] | None, n: int) -> np.ndarray:
    """Original batch positions of the items (0..n-1 when every item was valid)."""
    return np.arange(n) if positions is None else np.asarray(positions, dtype=np.int64)


def _logged(family: str, endpoint: str, request_id: str, model: ModelBundle, rows: pd.DataFrame,
            vectors: FeatureVectors, outputs: pd.DataFrame, item_index: np.ndarray, now: datetime) -> LoggedBatch:
    return LoggedBatch(family=family, endpoint=endpoint, request_id=request_id, model_name=model.name,
                       model_version=str(model.version), logged_at=now, item_index=item_index, inputs=rows,
                       features=vectors.frame, outputs=outputs, defaults_used=vectors.defaults_used)


def forecast_demand(items: Sequence[DemandRequest], model: ModelBundle, features: FeatureSource,
                    request_id: str, now: datetime | None = None, endpoint: str = "forecast_demand",
                    positions: Sequence[int] | None = None) -> PredictionResult:
    """Per item: P10/P50/P90 units per day (non-negative, non-crossing)."""
    now = now or datetime.now(timezone.utc)
    rows = demand_rows(items, default_start_date(now))
    vectors, raw = score(model, features, "demand", rows)
    q = np.sort(np.clip(raw[["p10", "p50", "p90"]].to_numpy(dtype="float64"), 0.0, None), axis=1)
    outputs = pd.DataFrame({"p10": q[:, 0], "p50": q[:, 1], "p90": q[:, 2]})
    item = rows["item"].to_numpy()
    dates = rows["date"].dt.strftime("%Y-%m-%d").to_numpy()
    defaults = vectors.defaults_used
    bounds = np.concatenate([[0], np.cumsum(np.bincount(item, minlength=len(items)))])
    responses = []
    for i, it in enumerate(items):
        lo, hi = bounds[i], bounds[i + 1]
        responses.append({
            "model_name": model.name, "model_version": str(model.version), "request_id": request_id,
            "defaults_used": bool(defaults[lo:hi].any()), "sku_id": it.sku_id, "market": it.market,
            "forecast": [{"date": dates[j], "p10": float(q[j, 0]), "p50": float(q[j, 1]), "p90": float(q[j, 2])}
                         for j in range(lo, hi)],
        })
    logged = _logged("demand", endpoint, request_id, model, rows.drop(columns=["item"]), vectors, outputs,
                     _positions(positions, len(items))[item], now)
    return PredictionResult(responses, logged)


def predict_delay(items: Sequence[DelayRequest], model: ModelBundle, features: FeatureSource,
                  request_id: str, now: datetime | None = None, endpoint: str = "predict_delay",
                  positions: Sequence[int] | None = None,
                  alert_hours: float = ALERT_DELAY_HOURS) -> PredictionResult:
    """Per shipment: transit days P50/P90, P(late), expected hours late and the > `alert_hours` alert."""
    now = now or datetime.now(timezone.utc)
    rows = delay_rows(items)
    vectors, raw = score(model, features, "delay", rows)
    p50 = np.clip(raw["transit_days_p50"].to_numpy(dtype="float64"), 0.0, None)
    p90 = np.maximum(raw["transit_days_p90"].to_numpy(dtype="float64"), p50)
    p_late = np.clip(raw["p_late"].to_numpy(dtype="float64"), 0.0, 1.0)
    promised = rows["promised_days"].to_numpy(dtype="float64")
    if "expected_delay_hours" in raw.columns:
        delay_hours = np.clip(raw["expected_delay_hours"].to_numpy(dtype="float64"), 0.0, None)
    else:  # median transit time beyond the promise
        delay_hours = np.clip(p50 - promised, 0.0, None) * 24.0
    alert = raw["alert"].to_numpy(dtype=bool) if "alert" in raw.columns else delay_hours > alert_hours
    outputs = pd.DataFrame({"transit_days_p50": p50, "transit_days_p90": p90, "p_late": p_late,
                            "expected_delay_hours": delay_hours, "alert": alert})
    defaults = vectors.defaults_used
    ids = rows["shipment_id"].to_numpy()
    responses = [{
        "model_name": model.name, "model_version": str(model.version), "request_id": request_id,
        "defaults_used": bool(defaults[i]), "shipment_id": str(ids[i]),
        "transit_days_p50": float(p50[i]), "transit_days_p90": float(p90[i]), "p_late": float(p_late[i]),
        "expected_delay_hours": float(delay_hours[i]), "alert": bool(alert[i]),
    } for i in range(len(rows))]
    logged = _logged("delay", endpoint, request_id, model, rows, vectors, outputs,
                     _positions(positions, len(rows)), now)
    return PredictionResult(responses, logged)


def risk_level(p_fraud: np.ndarray, p_compliance: np.ndarray, levels: dict[str, float]) -> np.ndarray:
    """The highest level whose threshold max(p_fraud, p_compliance) reaches (levels: name -> lower bound)."""
    names = sorted(levels, key=levels.get)
    bounds = np.array([levels[n] for n in names])
    worst = np.maximum(p_fraud, p_compliance)
    return np.array(names, dtype=object)[np.clip(np.searchsorted(bounds, worst, side="right") - 1, 0, None)]


def score_risk(items: Sequence[RiskRequest], model: ModelBundle, features: FeatureSource,
               request_id: str, now: datetime | None = None, endpoint: str = "score_risk",
               positions: Sequence[int] | None = None,
               levels: dict[str, float] | None = None) -> PredictionResult:
    """Per order: P(fraud), P(compliance issue), risk level and reason codes.

    The orders are pushed into the real-time velocity features first: an order's own velocity row includes
    the order, as in training (features.store time conventions).
    """
    now = now or datetime.now(timezone.utc)
    if getattr(model, "supports_columns", False) and hasattr(features, "lookup_columns"):
        return _score_risk_columns(items, model, features, request_id, now, endpoint, positions, levels)
    rows = risk_rows(items)
    features.push_orders(rows)
    vectors, raw = score(model, features, "risk", rows)
    outputs, responses = _risk_answers(raw, model, request_id, vectors.defaults_used, rows["order_id"].to_numpy(),
                                       levels)
    logged = _logged("risk", endpoint, request_id, model, rows, vectors, pd.DataFrame(outputs),
                     _positions(positions, len(rows)), now)
    return PredictionResult(responses, logged)


def _risk_answers(raw: Any, model: Any, request_id: str, defaults: np.ndarray, ids: np.ndarray,
                  levels: dict[str, float] | None) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """The model's raw risk outputs (a frame or column -> array) as clipped output columns and JSON answers."""
    n = len(ids)
    p_fraud = np.clip(np.asarray(raw["p_fraud"], dtype="float64"), 0.0, 1.0)
    p_comp = np.clip(np.asarray(raw["p_compliance"], dtype="float64"), 0.0, 1.0)
    if "risk_level" in raw:
        level = np.asarray(raw["risk_level"]).astype(str)
    else:
        level = risk_level(p_fraud, p_comp, levels or DEFAULT_RISK_LEVELS)
    reasons = list(raw["reasons"]) if "reasons" in raw else [[] for _ in range(n)]
    reasons_column = np.empty(n, dtype=object)
    reasons_column[:] = reasons
    outputs = {"p_fraud": p_fraud, "p_compliance": p_comp, "risk_level": level, "reasons": reasons_column}
    version = str(model.version)
    responses = [{
        "model_name": model.name, "model_version": version, "request_id": request_id,
        "defaults_used": bool(defaults[i]), "order_id": str(ids[i]), "p_fraud": float(p_fraud[i]),
        "p_compliance": float(p_comp[i]), "risk_level": str(level[i]), "reasons": [str(r) for r in reasons[i]],
    } for i in range(n)]
    return outputs, responses


def _score_risk_columns(items: Sequence[RiskRequest], model: Any, features: Any, request_id: str, now: datetime,
                        endpoint: str, positions: Sequence[int] | None,
                        levels: dict[str, float] | None) -> PredictionResult:
    """`score_risk` on column -> array tables end to end (FeastFeatureSource.lookup_columns and the bundle's
    predict_columns): the same pushes, lookups and model code as the DataFrame path, with none of the per-call
    DataFrame construction that dominated a single order's latency (tests compare the two paths)."""
    rows = risk_columns(items)
    pushed = features.push_orders(rows)
    # the velocity rows just written are used as written, not read back (FeastFeatureSource)
    vectors, defaults = features.lookup_columns("risk", rows, **({"pushed": pushed} if pushed else {}))
    raw = model.predict_columns({**rows, **vectors})  # feature-source columns win, as in `score`
    n = len(items)
    if any(len(raw[c]) != n for c in OUTPUT_COLUMNS["risk"]):
        raise RuntimeError(f"model {model.name} v{model.version} returned outputs of the wrong length for {n} rows")
    outputs, responses = _risk_answers(raw, model, request_id, defaults, rows["order_id"], levels)
    logged = LoggedBatch(family="risk", endpoint=endpoint, request_id=request_id, model_name=model.name,
                         model_version=str(model.version), logged_at=now, item_index=_positions(positions, n),
                         inputs=rows, features=vectors, outputs=outputs, defaults_used=np.asarray(defaults, dtype=bool))
    return PredictionResult(responses, logged)


PREDICTORS = {"demand": forecast_demand, "delay": predict_delay, "risk": score_risk}
