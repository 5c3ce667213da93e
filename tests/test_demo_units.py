"""The demo's pieces that need no trained models: state decisions, the data as known at a moment, request
bodies, outcome files and the service process's clean-up."""

from __future__ import annotations

import os
import signal
import sys
import time

import pandas as pd
import pytest

from tradecast import demo
from tradecast.errors import TradecastError


def test_plan_puts_the_event_inside_the_traffic_and_enough_history_before_it(tmp_home):
    plan = demo.plan_demo("tiny", 7)
    assert plan.deploy < plan.event < plan.now
    assert (plan.now - plan.event).days == demo.EVENT_DAYS_BEFORE_NOW
    assert (plan.event - plan.deploy).days == demo.PRE_EVENT_DAYS
    assert (plan.deploy - plan.first_day).days >= 250  # room for the backtests before the deploy day
    assert plan.steps()[0] == plan.deploy and plan.steps()[-1] < plan.now
    assert demo.plan_demo("tiny", 7).fingerprint == plan.fingerprint
    assert demo.plan_demo("tiny", 8).fingerprint != plan.fingerprint


def test_state_decisions(tmp_home):
    plan = demo.plan_demo("tiny", 7)
    assert demo.decide_state(plan, fresh=False).action == "fresh"
    (tmp_home / "offline").mkdir(parents=True)
    (tmp_home / "offline" / "orders.parquet").write_bytes(b"user data")
    with pytest.raises(TradecastError, match="--fresh"):  # someone's own data is never replaced silently
        demo.decide_state(plan, fresh=False)
    assert demo.decide_state(plan, fresh=True).action == "replace"
    demo.write_state({"fingerprint": plan.fingerprint, "initial_versions": {"delay": "1"}, "complete_setup": True})
    assert demo.decide_state(plan, fresh=False).action == "reuse"
    other = demo.plan_demo("tiny", 8)
    decision = demo.decide_state(other, fresh=False)
    assert decision.action == "replace" and "fingerprint" in decision.reason
    demo.write_state({"fingerprint": plan.fingerprint})  # a run that died before training finished
    assert demo.decide_state(plan, fresh=False).action == "replace"
    (tmp_home / "api_key").write_text("k\n")
    removed = demo.wipe_owned_state()
    assert "offline" in removed and "demo" in removed
    assert (tmp_home / "api_key").exists() and not (tmp_home / "offline").exists()


def test_tables_known_at_hide_the_future(tiny_tables):
    as_of = pd.Timestamp(tiny_tables["shipments"]["created_at"].quantile(0.7)).normalize()
    known = demo.tables_known_at(tiny_tables, as_of)
    ships = known["shipments"]
    assert (pd.to_datetime(ships["created_at"]) < as_of).all()
    delivered = pd.to_datetime(ships["delivered_at"])
    assert (delivered.dropna() <= as_of).all()
    assert ships.loc[delivered.isna(), "transit_days"].isna().all()  # in transit: no outcome yet
    orders = known["orders"]
    reported = pd.to_datetime(orders["fraud_reported_at"])
    assert (reported.dropna() <= as_of).all()
    assert not orders.loc[reported.isna(), "is_fraud"].astype("boolean").fillna(False).any()
    assert (pd.to_datetime(known["daily_sales"]["date"]) < as_of).all()
    assert len(known["shipments"]) < len(tiny_tables["shipments"])


def test_request_bodies_validate_against_the_serving_schemas(tiny_tables):
    from serving.schemas import DelayRequest, DemandRequest, RiskRequest

    start = pd.Timestamp(tiny_tables["daily_sales"]["date"].max()) - pd.Timedelta(days=30)
    end = start + pd.Timedelta(days=14)
    delay = demo.delay_requests(tiny_tables["shipments"], start, end)
    risk = demo.risk_requests(tiny_tables["orders"], start, end, limit=50, seed=1)
    demand = demo.demand_requests(tiny_tables["daily_sales"], start, 14, 10, seed=1)
    assert delay and len(risk) == 50 and 0 < len(demand) <= 10
    for body in delay:
        DelayRequest.model_validate(body)
    for body in risk:
        RiskRequest.model_validate(body)
    assert [b["ordered_at"] for b in risk] == sorted(b["ordered_at"] for b in risk)
    for body in demand:
        req = DemandRequest.model_validate(body)
        assert len(req.price) == 14 and str(req.start_date) == start.strftime("%Y-%m-%d")


def test_outcome_frames_only_hold_what_is_known(tiny_tables, tmp_home):
    from features.schema import FRAUD_LABEL_WINDOW_DAYS

    ships = tiny_tables["shipments"]
    now = pd.Timestamp(ships["created_at"].max()).normalize() - pd.Timedelta(days=20)
    plan = demo.DemoPlan("tiny", 7, "fraud_ring", 240, now - pd.Timedelta(days=200), now - pd.Timedelta(days=100),
                         now - pd.Timedelta(days=72), now, "x")
    frames = demo.outcome_frames(tiny_tables, plan)
    assert (pd.to_datetime(frames["delay"]["delivered_at"]) <= now).all()
    risk = frames["risk"].merge(tiny_tables["orders"][["order_id", "ordered_at"]], on="order_id")
    negatives = risk[risk["is_fraud"] == False]  # noqa: E712 (object column with None)
    assert (pd.to_datetime(negatives["ordered_at"]) + pd.Timedelta(days=FRAUD_LABEL_WINDOW_DAYS) <= now).all()
    assert (pd.to_datetime(risk["fraud_reported_at"]).dropna() <= now).all()
    assert (pd.to_datetime(frames["demand"]["date"]) < now).all()
    summaries = demo.ingest_demo_outcomes(frames)
    assert set(summaries) == {"demand", "delay", "risk"}


@pytest.mark.slow
def test_service_process_stop_kills_the_whole_process_group(tmp_home):
    # a parent that starts a child and ignores SIGINT: stop() must still leave nothing behind
    script = ("import signal, subprocess, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
              "print(child.pid, flush=True); time.sleep(600)")
    service = demo.ServiceProcess(demo.free_port(), tmp_home / "demo" / "svc.log",
                                  command=[sys.executable, "-c", script]).start()
    deadline = time.time() + 30
    while time.time() < deadline and not (tmp_home / "demo" / "svc.log").read_text().strip():
        time.sleep(0.2)
    child = int((tmp_home / "demo" / "svc.log").read_text().split()[0])
    assert service.running()
    status = service.stop(timeout=2)
    assert status is not None and not service.running()
    time.sleep(0.5)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Running and not a zombie (an orphan may wait for a reaper that never comes in a container)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            state = next(line for line in fh if line.startswith("State:"))
    except (FileNotFoundError, StopIteration):
        return False
    return "Z" not in state.split()[1]


def test_sigterm_raises_inside_the_demo_so_finally_blocks_run():
    with pytest.raises(KeyboardInterrupt):
        with demo.terminate_on_sigterm():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.default_int_handler) or \
        callable(signal.getsignal(signal.SIGTERM))
