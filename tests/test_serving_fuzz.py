"""Property-based run against the service's own OpenAPI schema (schemathesis strategies, bounded):
whatever a caller sends to any endpoint, valid or not, the answer is never a 5xx."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings

ENDPOINTS = ["/forecast_demand", "/predict_delay", "/score_risk", "/forecast_demand_batch", "/predict_delay_batch",
             "/score_risk_batch"]


def _jsonable(value):
    """Negative cases may hold bytes or other non-JSON values: send them as text."""
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _has_body(case) -> bool:
    return case.body is not None and type(case.body).__name__ != "NotSet"


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory):
    from serving_support import served_app

    with served_app(tmp_path_factory.mktemp("fuzz_home"), tmp_path_factory.mktemp("prom"), max_batch_items=5) as c:
        yield c


@pytest.fixture(scope="module")
def openapi(fuzz_client):
    import schemathesis

    return schemathesis.openapi.from_dict(fuzz_client.get("/docs.json").json())


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("path", ENDPOINTS)
def test_no_server_errors(fuzz_client, openapi, path, mode):
    from schemathesis.generation.modes import GenerationMode
    from serving_support import TEST_KEY

    strategy = openapi[path]["POST"].as_strategy(generation_mode=GenerationMode(mode))
    seen = []

    @settings(max_examples=20, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def check(case):
        body = json.dumps(case.body, allow_nan=True, default=_jsonable).encode() if _has_body(case) else b""
        r = fuzz_client.post(path, content=body, headers={"Authorization": f"Bearer {TEST_KEY}",
                                                          "content-type": "application/json"})
        seen.append(r.status_code)
        assert r.status_code < 500, f"{path} answered {r.status_code} to {body[:500]!r}: {r.text[:500]}"
        if r.status_code >= 400:
            assert r.json().get("field"), r.text

    check()
    assert seen and (mode == "negative" or 200 in seen)
