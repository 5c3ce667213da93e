"""The BentoML service: endpoints that validate, call the runtime's tested functions and answer JSON.

Run with `tradecast serve` (or `bentoml serve serving.service:TradecastService`). Request bodies are
validated by BentoML against the pydantic models in serving/schemas.py (400 naming the field); batch items
are validated one by one in serving/predict.py so one bad item does not sink the others.
"""

from __future__ import annotations

from typing import Annotated, Any

import bentoml
from pydantic import BaseModel, WithJsonSchema
from starlette.responses import JSONResponse

from serving.auth import ApiKeyMiddleware, ValidationMessageMiddleware
from serving.predict import new_request_id
from serving.runtime import build_runtime
from serving.schemas import (DelayRequest, DelayResponse, DemandRequest, DemandResponse, ItemError, RiskRequest,
                             RiskResponse)


def _batch_of(model: type[BaseModel]) -> Any:
    """A JSON list of `model` objects, documented as such but validated item by item by the endpoint."""
    schema = {"type": "array", "items": model.model_json_schema(), "minItems": 0,
              "description": "items answered in order; an invalid item gets {index, field, error} in its place"}
    return Annotated[list[Any], WithJsonSchema(schema)]


DemandBatch = _batch_of(DemandRequest)
DelayBatch = _batch_of(DelayRequest)
RiskBatch = _batch_of(RiskRequest)


def _answer(status_body: tuple[int, Any], request_id: str) -> JSONResponse:
    status, body = status_body
    return JSONResponse(body, status_code=status, headers={"X-Request-ID": request_id})


class ReloadResponse(BaseModel):
    changed: dict[str, dict[str, Any]]
    models: dict[str, dict[str, str]]


@bentoml.service(name="tradecast", traffic={"timeout": 60})
class TradecastService:
    """tradecast predictions: demand forecast, transit delay, fraud and compliance risk."""

    def __init__(self) -> None:
        self.runtime = build_runtime()
        self.runtime.freeze_heap()  # no full GC pass over the loaded models on the request path

    def __is_ready__(self) -> bool:
        return self.runtime.ready()

    @bentoml.on_shutdown
    def flush_prediction_log(self) -> None:
        self.runtime.close()

    @bentoml.api(route="/forecast_demand")
    async def forecast_demand(self, request: DemandRequest, /) -> DemandResponse:
        """P10/P50/P90 units per day for one SKU in one market over the next 1-90 days."""
        rid = new_request_id()
        return _answer(await self.runtime.predict_async("demand", request, rid), rid)

    @bentoml.api(route="/predict_delay")
    async def predict_delay(self, request: DelayRequest, /) -> DelayResponse:
        """Transit days P50/P90, P(late), expected hours late and a >48 h alert for one shipment."""
        rid = new_request_id()
        return _answer(await self.runtime.predict_async("delay", request, rid), rid)

    @bentoml.api(route="/score_risk")
    async def score_risk(self, request: RiskRequest, /) -> RiskResponse:
        """P(fraud), P(compliance issue), risk level and reason codes for one order."""
        rid = new_request_id()
        return _answer(await self.runtime.predict_async("risk", request, rid), rid)

    @bentoml.api(route="/forecast_demand_batch")
    async def forecast_demand_batch(self, items: DemandBatch, /) -> list[DemandResponse | ItemError]:
        """A list of demand requests -> a list of answers, in order."""
        rid = new_request_id()
        return _answer(self.runtime.predict_batch("demand", items, rid), rid)

    @bentoml.api(route="/predict_delay_batch")
    async def predict_delay_batch(self, items: DelayBatch, /) -> list[DelayResponse | ItemError]:
        """A list of shipments -> a list of answers, in order."""
        rid = new_request_id()
        return _answer(self.runtime.predict_batch("delay", items, rid), rid)

    @bentoml.api(route="/score_risk_batch")
    async def score_risk_batch(self, items: RiskBatch, /) -> list[RiskResponse | ItemError]:
        """A list of orders -> a list of answers, in order."""
        rid = new_request_id()
        return _answer(self.runtime.predict_batch("risk", items, rid), rid)

    @bentoml.api(route="/admin/reload")
    def reload(self) -> ReloadResponse:
        """Check the registry now and swap in any champion whose alias moved (this worker; others poll)."""
        changed = self.runtime.reload()
        return ReloadResponse(changed=changed, models=self.runtime.status()["models"])


# Outermost first: the key check runs before anything reads the body.
TradecastService.add_asgi_middleware(ApiKeyMiddleware)
TradecastService.add_asgi_middleware(ValidationMessageMiddleware)
