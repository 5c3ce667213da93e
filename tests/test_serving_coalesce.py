"""Coalescing of concurrent single requests (serving.coalesce) and the runtime path that uses it."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from serving.coalesce import Coalescer, InFlight


def _recording_run(calls: list):
    def run(items):
        calls.append(list(items))
        return [f"answer-{i}" for i in items]
    return run


def _submit_all(coalescer: Coalescer, in_flight: InFlight, items: list, key: str = "risk"):
    """Submit each item from its own task, each tracked in flight as the API key middleware does."""
    async def one(item):
        with in_flight.track(key):
            await asyncio.sleep(0)  # the request's way through the middlewares before it reaches the endpoint
            return await coalescer.submit(item)

    async def main():
        return await asyncio.gather(*(one(i) for i in items), return_exceptions=True)

    return asyncio.run(main())


def test_requests_in_flight_together_are_answered_by_one_call():
    calls: list = []
    in_flight = InFlight()
    coalescer = Coalescer(_recording_run(calls), max_items=32, linger_s=5.0, key="risk", in_flight=in_flight)
    started = time.perf_counter()
    answers = _submit_all(coalescer, in_flight, [1, 2, 3, 4, 5])
    assert answers == [f"answer-{i}" for i in (1, 2, 3, 4, 5)]
    assert calls == [[1, 2, 3, 4, 5]]
    assert time.perf_counter() - started < 1.0  # flushed when all five had queued, not at the 5 s deadline


def test_a_lone_request_is_not_held_back():
    calls: list = []
    in_flight = InFlight()
    coalescer = Coalescer(_recording_run(calls), linger_s=5.0, key="risk", in_flight=in_flight)
    started = time.perf_counter()
    assert _submit_all(coalescer, in_flight, [7]) == ["answer-7"]
    assert calls == [[7]] and time.perf_counter() - started < 1.0


def test_batches_are_cut_at_max_items_and_stragglers_wait_at_most_the_linger():
    calls: list = []
    in_flight = InFlight()
    coalescer = Coalescer(_recording_run(calls), max_items=2, linger_s=0.05, key="risk", in_flight=in_flight)
    assert _submit_all(coalescer, in_flight, [1, 2, 3, 4, 5]) == [f"answer-{i}" for i in (1, 2, 3, 4, 5)]
    assert [len(c) for c in calls] == [2, 2, 1]

    # a request counted in flight that never submits (e.g. it failed validation) delays the flush only until
    # the deadline
    calls.clear()
    coalescer = Coalescer(_recording_run(calls), linger_s=0.2, key="risk", in_flight=in_flight)

    async def main():
        with in_flight.track("risk"):  # the straggler
            started = time.perf_counter()
            with in_flight.track("risk"):
                answer = await coalescer.submit(9)
            return answer, time.perf_counter() - started

    answer, waited = asyncio.run(main())
    assert answer == "answer-9" and calls == [[9]] and 0.15 < waited < 2.0


def test_a_failed_call_fails_every_request_of_the_batch_and_the_next_batch_works():
    in_flight = InFlight()
    state = {"fail": True}

    def run(items):
        if state["fail"]:
            raise RuntimeError("store down")
        return list(items)

    coalescer = Coalescer(run, linger_s=1.0, key="risk", in_flight=in_flight)
    answers = _submit_all(coalescer, in_flight, [1, 2, 3])
    assert all(isinstance(a, RuntimeError) and "store down" in str(a) for a in answers)
    state["fail"] = False
    assert _submit_all(coalescer, in_flight, [4, 5]) == [4, 5]


@pytest.mark.parametrize("family", ["risk", "delay", "demand"])
def test_coalesced_requests_answer_and_log_as_single_requests(family, tmp_path, monkeypatch):
    import serving_support
    from serving.coalesce import IN_FLIGHT
    from serving.loading import ServingConfig
    from serving.prediction_log import batches_records
    from serving.schemas import REQUEST_MODELS, load_example
    from serving.bundle import ENDPOINTS

    monkeypatch.setenv("TRADECAST_HOME", str(tmp_path))
    runtime = serving_support.make_runtime(ServingConfig(reload_poll_s=0, coalesce_max_items=32))
    body = load_example(ENDPOINTS[family])
    requests = []
    for i in range(4):
        changed = dict(body)
        if family == "risk":  # different IPs: co-scored orders then cannot change each other's velocity
            changed.update(order_id=f"C-{i}", ip=f"10.0.9.{i}", amount=20.0 + 30 * i)
        elif family == "delay":
            changed.update(shipment_id=f"S-{i}", weight_kg=1.0 + i)
        else:
            changed.update(horizon_days=2 + i)
        requests.append(REQUEST_MODELS[family].model_validate(changed))
    ids = [f"rid-{i}" for i in range(4)]

    async def main():
        async def one(item, rid):
            with IN_FLIGHT.track(family):
                await asyncio.sleep(0)
                return await runtime.predict_async(family, item, rid)
        return await asyncio.gather(*(one(r, i) for r, i in zip(requests, ids)))

    coalesced = asyncio.run(main())
    coalescer = runtime._coalescers[family]
    assert coalescer.flushes == 1 and coalescer.items == 4  # really answered together
    logged = list(runtime.log._pending)
    alone = [runtime.predict(family, r, f"alone-{i}") for i, r in enumerate(requests)]
    for (status, answer), (status_alone, answer_alone), rid in zip(coalesced, alone, ids):
        assert status == status_alone == 200
        assert answer["request_id"] == rid
        assert {**answer, "request_id": ""} == {**answer_alone, "request_id": ""}
    records = batches_records(logged)
    assert sorted({r["request_id"] for r in records}) == ids
    for r in records:
        assert r["prediction_id"].startswith(f"{r['request_id']}:0")
    with contextlib.suppress(Exception):
        runtime.close()
