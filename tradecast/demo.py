"""`tradecast demo`: the main job end to end on the embedded defaults, one plain function per stage.

The demo replays a deployment on synthetic data in which a fraud ring starts part-way: aged accounts with
matching countries share a few devices at a few merchants (the generator's `fraud_ring` scenario, moved to
`EVENT_DAYS_BEFORE_NOW` days before the data ends). The champion, trained before the ring existed, misses most of
its orders; chargebacks arrive 30-90 days after the order, so the risk monitor sees the recall drop some weeks
later, and a retrain at `now` learns the ring from the label windows closed by then:

  deploy day D = event - 28 d          now = the day after the last generated day
  |---- training history ----|-- traffic before the event --|-- traffic after the event (240 d) --|
                             D                            event                                   now

1. generate the canonical tables (scenario included) and keep them in memory;
2. write the tables *as known at D* (no row or outcome from after D) to the offline store, compute the feature
   sources, apply the Feast definitions and train all three families (demand with its PyTorch challenger);
   the gate makes the first versions champions;
3. write the tables as known at `now`, recompute the feature sources and start `tradecast serve` (a real
   subprocess in its own process group, on a free port);
4. replay the traffic of [D, now) over HTTP two weeks at a time, materializing the online store every four
   weeks up to that day, so requests see the features the store would have held then (never later ones);
   singles and batches on every endpoint, then a set of bad requests that must get 4xx;
5. ingest the outcomes known at `now` (deliveries, chargebacks, actual sales) through monitoring.outcomes;
6. run the monitor per family on the last week (by event time) against the first four weeks the champion
   served (a fixed, known-good reference), with performance judged on labels known at `now`;
7. retrain the families whose alert reaches `retrain.min_severity` (configs/monitoring.yaml) through the
   promotion gate (monitoring.retrain: the new version must beat the deployed champion on the recent folds);
8. POST /admin/reload and check that the service answers with the promoted version, then stop it.

State lives in $TRADECAST_HOME like every other command. `demo/state.json` records a fingerprint of what the
demo generated (data config, scale, seed, scenario, timeline); a second run with the same fingerprint reuses
the data, features and first models (rolling the champions back to the versions trained at D), and replaces
everything the demo owns when it differs or with `fresh=True`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from tradecast.errors import TradecastError
from tradecast.paths import (PROJECT_ROOT, ensure_dir, feast_dir, home, mlflow_dir, offline_dir, outcomes_dir,
                             prediction_log_dir, reports_dir)

FAMILIES = ("demand", "delay", "risk")
SCENARIO = "fraud_ring"
SCENARIO_FAMILY = "risk"  # the family the scenario should trip
# Fraud labels close 90 days after the order (chargebacks come 30-90 days late), so a retrain can only learn the
# ring from its orders months after it starts, and the gate judges it on the last closed label windows: with "now"
# 240 days after the event, training closes at day 150 and the three 28-day backtest folds (days 66-150) each train
# on two months or more of labelled ring orders (at 180 days the first fold would train on six days of them and the new
# version lost to the deployed champion on the folds, 0.590 vs 0.605). The demo's "now" is this long after the event.
EVENT_DAYS_BEFORE_NOW = 240
PRE_EVENT_DAYS = 28  # traffic served before the event: the monitor's reference
STEP_DAYS = 14  # traffic is replayed two weeks at a time ...
MATERIALIZE_EVERY_STEPS = 2  # ... and the online store materialized every four weeks (Feast costs ~25 s a run)
DEMAND_HORIZON_DAYS = 14  # each step's forecasts cover its days
DEMAND_SERIES_PER_STEP = 120  # forecast requests per step (a sample of the sku x market series)
MIN_DAYS = 600  # tiny's 240 days are too short: a year of history before the deploy day (risk labels take 90 days)
MONITOR_FIRST_DAYS, MONITOR_EVERY_DAYS = 30, 14  # the scenario family's scheduled monitor, replayed (risk
# performance is judged on predictions at least 30 days old: day 30 is the first run that judges any made after
# the event)
# a lengthened scale (tiny) also gets at least this many orders a day (small has ~110): the ring is 1.5% of orders,
# and at tiny's 21 a day the retrain had too few labelled ring orders to beat the deployed champion on the folds
MIN_ORDERS_PER_DAY = 100
RISK_ORDERS_PER_STEP = 700  # a seeded sample of each step's orders keeps the replay short at --scale small
BATCH_ITEMS = 400  # under serving's max_batch_items (500)
STATE_VERSION = 1
# the demo owns these parts of $TRADECAST_HOME (the API key is kept: a client may already hold it)
OWNED = ("offline", "features", "feast", "mlflow", "models", "predictions", "outcomes", "reports", "demo")

Say = Callable[[str], None]


# ------------------------------------------------------------------------------------------- plan and state
@dataclass(frozen=True)
class DemoPlan:
    """The demo's calendar (naive UTC midnights) and the inputs that decide its data."""

    scale: str
    seed: int
    scenario: str
    days: int
    first_day: pd.Timestamp
    deploy: pd.Timestamp
    event: pd.Timestamp
    now: pd.Timestamp
    fingerprint: str

    def steps(self) -> list[pd.Timestamp]:
        """Start of each replayed traffic step in [deploy, now)."""
        return list(pd.date_range(self.deploy, self.now - pd.Timedelta(days=1), freq=f"{STEP_DAYS}D"))


def demo_dir() -> Path:
    return home() / "demo"


def state_path() -> Path:
    return demo_dir() / "state.json"


def demo_data_config(scale: str):
    """configs/data.yaml with the scenario moved to `EVENT_DAYS_BEFORE_NOW` days before the end, and a scale
    shorter than MIN_DAYS lengthened to it at the same daily volumes (tiny: 240 days -> MIN_DAYS), orders at
    least MIN_ORDERS_PER_DAY a day."""
    from features.generate import load_data_config

    cfg = load_data_config(None)
    if scale not in cfg.scales:
        raise TradecastError(f"--scale '{scale}': choose one of {', '.join(cfg.scales)}")
    scenario_cfg = getattr(cfg.scenarios, SCENARIO).model_copy(update={"days_before_end": EVENT_DAYS_BEFORE_NOW})
    update: dict[str, Any] = {"scenarios": cfg.scenarios.model_copy(update={SCENARIO: scenario_cfg})}
    sc = cfg.scales[scale]
    if sc.days < MIN_DAYS:
        factor = MIN_DAYS / sc.days
        longer = sc.model_copy(update={"days": MIN_DAYS, "shipments": int(sc.shipments * factor),
                                       "orders": max(int(sc.orders * factor), MIN_ORDERS_PER_DAY * MIN_DAYS)})
        update["scales"] = {**cfg.scales, scale: longer}
    return cfg.model_copy(update=update)


def plan_demo(scale: str, seed: int) -> DemoPlan:
    """The calendar of a demo run and the fingerprint of the data it generates."""
    from features.generate import scenario_start

    cfg = demo_data_config(scale)
    days = cfg.scales[scale].days
    now = pd.Timestamp(cfg.end) + pd.Timedelta(days=1)
    first = now - pd.Timedelta(days=days)
    event = scenario_start(cfg, SCENARIO, days=days, scale=scale)
    deploy = event - pd.Timedelta(days=PRE_EVENT_DAYS)
    from features import generate

    code = hashlib.sha256(Path(generate.__file__).read_bytes()).hexdigest()[:12]  # a generator change = new data
    blob = json.dumps({"data": cfg.model_dump(mode="json"), "generator": code, "scale": scale, "seed": seed,
                       "scenario": SCENARIO, "days": days, "deploy": str(deploy), "now": str(now),
                       "version": STATE_VERSION}, sort_keys=True)
    fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return DemoPlan(scale, seed, SCENARIO, days, first, deploy, event, now, fingerprint)


@dataclass
class StateDecision:
    """What happens to the state a previous run left: fresh (nothing there), reuse or replace."""

    action: str
    reason: str
    previous: dict[str, Any] | None = None


def read_state() -> dict[str, Any] | None:
    try:
        return json.loads(state_path().read_text())
    except (OSError, ValueError):
        return None


def write_state(state: dict[str, Any]) -> None:
    path = ensure_dir(demo_dir()) / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, default=str))
    os.replace(tmp, path)


def decide_state(plan: DemoPlan, fresh: bool) -> StateDecision:
    """Reuse a previous demo's data and first models when its fingerprint matches; else replace them."""
    previous = read_state()
    has_data = offline_dir().exists() and any(offline_dir().glob("*.parquet"))
    if fresh:
        return StateDecision("replace" if (previous or has_data) else "fresh",
                             "--fresh: wiping what the demo owns in " + str(home()), previous)
    if previous is None:
        if has_data:
            raise TradecastError(f"{home()} holds data that no demo run made (your own data?): the demo would "
                                 f"replace it. Run it with --fresh to do that, or set TRADECAST_HOME to another "
                                 f"folder")
        return StateDecision("fresh", f"nothing in {home()} yet", None)
    if previous.get("fingerprint") != plan.fingerprint:
        return StateDecision("replace", f"data config, generator code, scale or seed changed (fingerprint "
                                        f"{previous.get('fingerprint')} -> {plan.fingerprint}): replacing the "
                                        f"previous demo's state", previous)
    if not previous.get("initial_versions") or not previous.get("complete_setup"):
        return StateDecision("replace", "the previous run stopped before its models were trained: starting over",
                             previous)
    return StateDecision("reuse", f"same data fingerprint {plan.fingerprint}: reusing data, features and the "
                                  f"models trained at the deploy day (champions rolled back to them)", previous)


def wipe_owned_state() -> list[str]:
    """Delete the parts of $TRADECAST_HOME the demo owns; returns what was removed."""
    removed = []
    for name in OWNED:
        path = home() / name
        if path.exists():
            shutil.rmtree(path)
            removed.append(name)
    return removed


def reset_run_state() -> None:
    """Before a reused run: forget the previous run's traffic, outcomes, reports and online store."""
    for path in (prediction_log_dir(), outcomes_dir(), reports_dir(), feast_dir(), demo_dir() / "reference"):
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------- data
def generate_demo_tables(plan: DemoPlan) -> dict[str, pd.DataFrame]:
    """The five canonical tables with the scenario, in memory."""
    from features.generate import generate_tables

    return generate_tables(demo_data_config(plan.scale), scale=plan.scale, seed=plan.seed, scenario=plan.scenario,
                           days=plan.days)


def tables_known_at(tables: dict[str, pd.DataFrame], as_of: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """The tables as a system would hold them at `as_of`: events before it, outcomes only once known.

    Shipments keep their row from creation but transit/clearance/delivery/late stay empty until delivered;
    fraud and compliance flags count only once reported (an unreported order reads as "no issue so far",
    and training treats it as negative only after its label window closed).
    """
    out = dict(tables)
    sales = tables["daily_sales"]
    out["daily_sales"] = sales[pd.to_datetime(sales["date"]) < as_of].reset_index(drop=True)
    ships = tables["shipments"]
    ships = ships[pd.to_datetime(ships["created_at"]) < as_of].copy()
    unknown = ~(pd.to_datetime(ships["delivered_at"]) <= as_of)
    for col in ("clearance_hours", "transit_days", "delivered_at", "late"):
        ships[col] = ships[col].mask(unknown)
    out["shipments"] = ships.reset_index(drop=True)
    orders = tables["orders"]
    orders = orders[pd.to_datetime(orders["ordered_at"]) < as_of].copy()
    for flag, reported in (("is_fraud", "fraud_reported_at"), ("is_compliance_issue", "compliance_reported_at")):
        late = pd.to_datetime(orders[reported]) > as_of
        orders[flag] = orders[flag].astype("boolean").mask(late, False)
        orders[reported] = orders[reported].mask(late)
    out["orders"] = orders.reset_index(drop=True)
    return out


def write_tables(tables: dict[str, pd.DataFrame], as_of: pd.Timestamp) -> dict[str, int]:
    """Write the canonical tables to the offline store (each atomically); returns row counts."""
    from features.offline import write_table

    for name, frame in tables.items():
        write_table(name, frame, frequency="D", source="tradecast demo", known_at=str(as_of))
    return {name: len(frame) for name, frame in tables.items()}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence libraries that print (Feast's materialize banner, MLflow notes) under the progress display."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def build_features(say: Say) -> None:
    """Compute the feature sources from the offline store and register the Feast definitions."""
    import warnings

    from features.store import apply_definitions, compute_features, get_store

    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compute_features(progress=say)
        apply_definitions(get_store())


def materialize_until(end: pd.Timestamp) -> float:
    """Load the online store incrementally up to `end`; returns seconds taken."""
    import warnings

    from features.store import get_store, materialize

    started = time.perf_counter()
    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        materialize(get_store(), end=end.to_pydatetime())
    return time.perf_counter() - started


# ------------------------------------------------------------------------------------------- training
def train_all(say: Say, families: tuple[str, ...] = FAMILIES) -> dict[str, Any]:
    """Train each family through its pipeline (backtest, MLflow run, registry, gate); returns TrainResults."""
    from training.pipeline import train_family

    results = {}
    for family in families:
        started = time.perf_counter()
        with quiet():
            results[family] = train_family(family, None, lambda m, f=family: say(f"{f}: {m}"))
        say(f"{family}: v{results[family].version} in {time.perf_counter() - started:.0f}s")
    return results


def ensure_champions(versions: dict[str, str], reason: str) -> dict[str, str | None]:
    """Make the given versions champions (a first model the gate refused, or a roll-back on a reused run)."""
    from training import registry

    replaced = {}
    for family, version in versions.items():
        if registry.champion_version(family) != str(version):
            replaced[family] = registry.promote(family, str(version), reason)
    return replaced


def backtest_numbers(family: str, version: str) -> dict[str, dict[str, float]]:
    """{candidate: {metric: value}} of the run that produced `version` (all folds; baselines included)."""
    from training import registry

    client = registry.setup_mlflow()
    mv = client.get_model_version(registry.registered_name(family), str(version))
    metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        cand, _, metric = key.partition(".")
        if metric and not metric.startswith("fold") and cand not in ("seconds", "retrain"):
            out.setdefault(cand, {})[metric] = value
    estimator = mv.tags.get("estimator")
    if estimator:
        out["_selected"] = {"name": estimator}  # type: ignore[dict-item]
    return out


# ------------------------------------------------------------------------------------------- the service
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    """`tradecast serve` in the background, in its own process group so it and its workers stop together."""

    def __init__(self, port: int, log_path: Path, env: dict[str, str] | None = None,
                 command: list[str] | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self.env = env
        self._command = command
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self._command:
            return list(self._command)
        script = Path(sys.executable).with_name("tradecast")
        base = [str(script)] if script.exists() else [sys.executable, "-m", "tradecast.cli"]
        return base + ["serve", "--port", str(self.port), "--workers", "1"]

    def start(self) -> "ServiceProcess":
        env = dict(self.env or os.environ)
        env.setdefault("TRADECAST_HOME", str(home()))
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        self._log = open(ensure_dir(self.log_path.parent) / self.log_path.name, "ab")
        self.proc = subprocess.Popen(self.command(), cwd=PROJECT_ROOT, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Poll /readyz until 200; fails with the end of the server log when it dies or times out."""
        import httpx

        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.proc is None or self.proc.poll() is not None:
                raise TradecastError(f"tradecast serve exited ({self.proc.returncode if self.proc else '?'}); "
                                     f"end of {self.log_path}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=3).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TradecastError(f"tradecast serve not ready after {timeout:.0f}s; end of {self.log_path}:\n"
                             f"{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGINT to the process group (BentoML shuts down cleanly and flushes the prediction log), then
        SIGTERM, then SIGKILL; returns the exit status."""
        if self.proc is None:
            return None
        try:
            for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                if self.proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(wait)
            # workers left behind in the group (they should have gone with the server)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.poll()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None


# ------------------------------------------------------------------------------------------- traffic
def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    """JSON-ready request bodies: timestamps as ISO strings, missing values left out."""
    cols = [c for c in columns if c in frame.columns]
    part = frame[cols].copy()
    for c in cols:
        if pd.api.types.is_datetime64_any_dtype(part[c]):
            part[c] = part[c].dt.strftime("%Y-%m-%dT%H:%M:%S").where(part[c].notna(), None)
    records = part.astype(object).where(part.notna(), None).to_dict(orient="records")
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.items() if v is not None}
            for r in records]


DELAY_FIELDS = ["shipment_id", "origin_warehouse", "destination_market", "mode", "carrier", "weight_kg",
                "declared_value", "hs_code", "category", "promised_days", "customs_channel", "created_at"]
RISK_FIELDS = ["order_id", "ordered_at", "buyer_id", "account_created_at", "merchant_id", "sku_id", "category",
               "market", "amount", "quantity", "payment_method", "ip", "device_id", "ip_country", "card_country",
               "shipping_country", "declared_value", "hs_code", "item_description"]


def delay_requests(shipments: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> list[dict[str, Any]]:
    """Shipments created in [start, end) as /predict_delay bodies (what is known at creation)."""
    created = pd.to_datetime(shipments["created_at"])
    rows = shipments[(created >= start) & (created < end)].sort_values("created_at")
    return _records(rows, DELAY_FIELDS)


def risk_requests(orders: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, limit: int | None = None,
                  seed: int = 0) -> list[dict[str, Any]]:
    """Orders placed in [start, end) with their declarations as /score_risk bodies (a seeded sample of at most
    `limit`, in time order)."""
    placed = pd.to_datetime(orders["ordered_at"])
    rows = orders[(placed >= start) & (placed < end)]
    if limit is not None and len(rows) > limit:
        rows = rows.sample(n=limit, random_state=seed)
    return _records(rows.sort_values("ordered_at"), RISK_FIELDS)


def demand_requests(daily_sales: pd.DataFrame, start: pd.Timestamp, horizon: int, n_series: int,
                    seed: int) -> list[dict[str, Any]]:
    """/forecast_demand bodies for a sample of series: forecast `horizon` days from `start` with the planned
    price, discount, promotion and live-stream sessions of those days (what a seller plans ahead)."""
    dates = pd.to_datetime(daily_sales["date"])
    days = daily_sales[(dates >= start) & (dates < start + pd.Timedelta(days=horizon))].copy()
    days["date"] = pd.to_datetime(days["date"])
    counts = days.groupby(["sku_id", "market"]).size()
    complete = counts[counts == horizon].index
    if not len(complete):
        return []
    rng = np.random.default_rng([seed, int(start.value // 86_400_000_000_000)])
    chosen = complete[np.sort(rng.choice(len(complete), size=min(n_series, len(complete)), replace=False))]
    days = days.set_index(["sku_id", "market"]).loc[chosen].reset_index().sort_values(["sku_id", "market", "date"])
    bodies = []
    for (sku, market), g in days.groupby(["sku_id", "market"], sort=False):
        promo = g["promotion_event"].astype(object).where(g["promotion_event"].notna(), None).tolist()
        body = {"sku_id": sku, "market": market, "horizon_days": horizon, "start_date": start.strftime("%Y-%m-%d"),
                "price": [round(float(v), 2) for v in g["price"]],
                "discount": [round(float(min(max(v, 0.0), 0.95)), 4) for v in g["discount"].fillna(0.0)],
                "live_sessions": [int(v) for v in g["live_sessions"].fillna(0)]}
        if any(p for p in promo):
            body["promotion_event"] = [p if p else None for p in promo]
        bodies.append(body)
    return bodies


@dataclass
class TrafficStats:
    """What the replay sent and got back."""

    requests: dict[str, int] = field(default_factory=dict)  # endpoint -> HTTP calls
    items: dict[str, int] = field(default_factory=dict)  # family -> predictions answered
    item_errors: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    versions: dict[str, set[str]] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)
    materialize_seconds: float = 0.0
    examples: dict[str, tuple[dict, dict]] = field(default_factory=dict)  # endpoint -> (request, response)

    def count(self, endpoint: str, status: int, ms: float) -> None:
        self.requests[endpoint] = self.requests.get(endpoint, 0) + 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latency_ms.append(ms)


ENDPOINTS = {"demand": "forecast_demand", "delay": "predict_delay", "risk": "score_risk"}


def _post(client, stats: TrafficStats, endpoint: str, body: Any):
    started = time.perf_counter()
    response = client.post(f"/{endpoint}", json=body)
    stats.count(endpoint, response.status_code, (time.perf_counter() - started) * 1000)
    return response


def _take(stats: TrafficStats, family: str, answers: list[dict[str, Any]]) -> None:
    for answer in answers:
        if "model_version" in answer:
            stats.items[family] = stats.items.get(family, 0) + 1
            stats.versions.setdefault(family, set()).add(str(answer["model_version"]))
        else:
            stats.item_errors[family] = stats.item_errors.get(family, 0) + 1


def send_family(client, stats: TrafficStats, family: str, bodies: list[dict[str, Any]], singles: int) -> None:
    """The first `singles` bodies one by one on the single endpoint, the rest in batches."""
    endpoint = ENDPOINTS[family]
    for body in bodies[:singles]:
        response = _post(client, stats, endpoint, body)
        if response.status_code != 200:
            raise TradecastError(f"/{endpoint} answered {response.status_code}: {response.text[:300]}")
        _take(stats, family, [response.json()])
        stats.examples.setdefault(endpoint, (body, response.json()))
    rest = bodies[singles:]
    for i in range(0, len(rest), BATCH_ITEMS):
        chunk = rest[i:i + BATCH_ITEMS]
        response = _post(client, stats, f"{endpoint}_batch", chunk)
        if response.status_code != 200:
            raise TradecastError(f"/{endpoint}_batch answered {response.status_code}: {response.text[:300]}")
        answers = response.json()
        if len(answers) != len(chunk):
            raise TradecastError(f"/{endpoint}_batch answered {len(answers)} items for {len(chunk)}")
        _take(stats, family, answers)
        stats.examples.setdefault(f"{endpoint}_batch", (chunk[:2], answers[:2]))


def replay_traffic(client, plan: DemoPlan, tables: dict[str, pd.DataFrame], say: Say) -> TrafficStats:
    """Step by step over [deploy, now): materialize the online store to the step's start (every
    MATERIALIZE_EVERY_STEPS steps), then send the step's shipments and orders and a sample of demand forecasts
    over its days (singles first, then batches). Velocity features stay current between materializations:
    serving pushes every scored order into them."""
    stats = TrafficStats()
    steps = plan.steps()
    for i, start in enumerate(steps):
        end = min(start + pd.Timedelta(days=STEP_DAYS), plan.now)
        if i % MATERIALIZE_EVERY_STEPS == 0:
            stats.materialize_seconds += materialize_until(start)
        singles = 3 if i == 0 else 0
        send_family(client, stats, "delay", delay_requests(tables["shipments"], start, end), singles)
        send_family(client, stats, "risk", risk_requests(tables["orders"], start, end, RISK_ORDERS_PER_STEP,
                                                         plan.seed + i), singles)
        horizon = min(DEMAND_HORIZON_DAYS, (plan.now - start).days)
        send_family(client, stats, "demand", demand_requests(tables["daily_sales"], start, horizon,
                                                             DEMAND_SERIES_PER_STEP, plan.seed + i), singles)
        say(f"step {i + 1}/{len(steps)} ({start:%Y-%m-%d}): " +
            ", ".join(f"{f} {stats.items.get(f, 0):,}" for f in FAMILIES) + " predictions so far")
    materialize_until(plan.now)  # the store as it is now, for the requests after the replay
    return stats


@dataclass(frozen=True)
class BadRequestResult:
    what: str
    endpoint: str
    status: int
    message: str


def send_bad_requests(base_url: str, api_key: str, examples: dict[str, dict[str, Any]]) -> list[BadRequestResult]:
    """Requests a careless client sends; each must get a 4xx (or a per-item error) naming the problem."""
    import httpx

    auth = {"Authorization": f"Bearer {api_key}"}
    delay, demand, risk = examples["predict_delay"], examples["forecast_demand"], examples["score_risk"]
    cases: list[tuple[str, str, Any, dict[str, str] | None]] = [
        ("no API key", "predict_delay", delay, {}),
        ("wrong API key", "predict_delay", delay, {"Authorization": "Bearer not-the-key"}),
        ("negative weight", "predict_delay", {**delay, "weight_kg": -3.0}, None),
        ("unknown market", "score_risk", {**risk, "market": "XX"}, None),
        ("horizon out of range", "forecast_demand", {**demand, "horizon_days": 120}, None),
        ("missing field", "predict_delay", {k: v for k, v in delay.items() if k != "mode"}, None),
        ("extra field", "score_risk", {**risk, "coupon": "FREE"}, None),
        ("wrong type", "forecast_demand", {**demand, "horizon_days": "seven"}, None),
        ("malformed JSON", "score_risk", b'{"order_id": "O-1", ', None),
        ("oversized batch (501 items)", "predict_delay_batch", [delay] * 501, None),
        ("one bad item in a batch", "predict_delay_batch", [delay, {**delay, "mode": "teleport"}], None),
    ]
    out = []
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for what, endpoint, body, headers in cases:
            hdrs = auth if headers is None else headers
            if isinstance(body, bytes):
                response = client.post(f"/{endpoint}", content=body,
                                       headers={**hdrs, "Content-Type": "application/json"})
            else:
                response = client.post(f"/{endpoint}", json=body, headers=hdrs)
            try:
                payload = response.json()
            except ValueError:
                payload = {"error": response.text[:200]}
            if isinstance(payload, list):  # batch: the per-item error sits in place of the bad item
                errors = [p for p in payload if isinstance(p, dict) and "index" in p]
                message = "; ".join(f"item {e['index']}: {e.get('field')}: {e.get('error')}" for e in errors)
            else:
                message = f"{payload.get('field', '')}: {payload.get('error', payload)}".strip(": ")
            out.append(BadRequestResult(what, endpoint, response.status_code, str(message)[:160]))
    return out


# ------------------------------------------------------------------------------------------- outcomes
def outcome_frames(tables: dict[str, pd.DataFrame], plan: DemoPlan) -> dict[str, pd.DataFrame]:
    """The outcomes of the replayed period known at `now`: actual sales, deliveries, chargebacks and customs
    findings (a fraud negative only once its label window closed)."""
    from features.schema import FRAUD_LABEL_WINDOW_DAYS

    now, since = plan.now, plan.deploy
    sales = tables["daily_sales"]
    d = pd.to_datetime(sales["date"])
    demand = sales.loc[(d >= since) & (d < now), ["sku_id", "market", "date", "units"]]
    ships = tables["shipments"]
    known = (pd.to_datetime(ships["created_at"]) >= since) & (pd.to_datetime(ships["delivered_at"]) <= now)
    delay = ships.loc[known, ["shipment_id", "transit_days", "delivered_at", "late"]]
    orders = tables["orders"]
    orders = orders[pd.to_datetime(orders["ordered_at"]) >= since]
    fraud_known = orders["is_fraud"].astype("boolean").fillna(False).astype(bool) & \
        (pd.to_datetime(orders["fraud_reported_at"]) <= now)
    closed = pd.to_datetime(orders["ordered_at"]) + pd.Timedelta(days=FRAUD_LABEL_WINDOW_DAYS) <= now
    comp_known = orders["is_compliance_issue"].astype("boolean").fillna(False).astype(bool) & \
        (pd.to_datetime(orders["compliance_reported_at"]) <= now)
    risk = orders.loc[fraud_known | closed | comp_known, ["order_id"]].copy()
    sel = fraud_known | closed | comp_known
    risk["is_fraud"] = fraud_known[sel].astype(object).where((fraud_known | closed)[sel], None).to_numpy()
    risk["fraud_reported_at"] = orders.loc[sel, "fraud_reported_at"].where(fraud_known[sel]).to_numpy()
    risk["is_compliance_issue"] = comp_known[sel].astype(object).where((comp_known | closed)[sel], None).to_numpy()
    risk["compliance_reported_at"] = orders.loc[sel, "compliance_reported_at"].where(comp_known[sel]).to_numpy()
    return {"demand": demand.reset_index(drop=True), "delay": delay.reset_index(drop=True),
            "risk": risk.reset_index(drop=True)}


def ingest_demo_outcomes(frames: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Write each family's outcome file under demo/outcomes/ and ingest it (what `tradecast outcomes ingest`
    does); returns the ingest summaries."""
    from monitoring.outcomes import ingest_outcomes

    folder = ensure_dir(demo_dir() / "outcome_files")
    out = {}
    for family, frame in frames.items():
        path = folder / f"{family}.parquet"
        frame.to_parquet(path, index=False)
        out[family] = ingest_outcomes(family, path).describe()
    return out


# ------------------------------------------------------------------------------------------- monitor, retrain
def write_reference(family: str, plan: DemoPlan) -> Path | None:
    """The prediction log of the first `PRE_EVENT_DAYS` served (by event time) as the family's drift
    reference file (known-good weeks right after deployment)."""
    from monitoring.predlog import read_prediction_log

    frame = read_prediction_log(family, plan.deploy.to_pydatetime(), plan.event.to_pydatetime(), "event_time").frame
    if frame.empty:
        return None
    keep = [c for c in frame.columns if c.startswith(("f_", "in_", "out_"))]
    frame = frame[keep]
    for col in frame.columns:  # lists and mixed objects (reason codes) as text: Parquet needs one type
        if frame[col].dtype == object:
            frame[col] = frame[col].map(lambda v: v if v is None or isinstance(v, str) else
                                        (json.dumps(v) if isinstance(v, (list, dict)) else v))
            if frame[col].map(type).nunique() > 2:
                frame[col] = frame[col].astype(str)
    path = ensure_dir(demo_dir() / "reference") / f"{family}.parquet"
    frame.to_parquet(path, index=False)
    return path


def run_monitors(plan: DemoPlan, families: tuple[str, ...] = FAMILIES, until: pd.Timestamp | None = None
                 ) -> dict[str, Any]:
    """The monitor of each family on the week before `until` (default now; by event time, labels as known
    then) against its reference file."""
    from monitoring.config import load_monitoring_config
    from monitoring.monitor import run_monitor

    cfg = load_monitoring_config()
    results = {}
    for family in families:
        reference = ensure_dir(demo_dir() / "reference") / f"{family}.parquet"
        if not reference.exists():
            reference = write_reference(family, plan)
        with quiet():
            results[family] = run_monitor(family, cfg, until=(until or plan.now).to_pydatetime(),
                                          time_column="event_time", reference_path=reference)
    return results


def replay_monitor_schedule(plan: DemoPlan, family: str, say: Say, first_days: int = MONITOR_FIRST_DAYS,
                            every_days: int = MONITOR_EVERY_DAYS) -> tuple[list[tuple[pd.Timestamp, Any]], Any]:
    """The scheduled monitor of `family` as it would have run every `every_days` after the event, each seeing
    only the labels known on its day; stops at the first alert reaching retrain.min_severity. It starts
    `first_days` after the event: risk performance is judged on predictions at least 30 days old (chargebacks
    come late), so that is the first run that can see any order placed after the event. Returns
    every run (day, result) and the alerting result (or None)."""
    from monitoring.config import load_monitoring_config, severity_rank

    minimum = severity_rank(load_monitoring_config().retrain.min_severity)
    runs = []
    day = plan.event + pd.Timedelta(days=first_days)
    while day <= plan.now:
        result = run_monitors(plan, (family,), until=day)[family]
        runs.append((day, result))
        say(f"{family} monitor on {day:%Y-%m-%d}: {result.severity or 'no alert'}")
        if severity_rank(result.severity) >= minimum:
            return runs, result
        day += pd.Timedelta(days=every_days)
    return runs, None


def retrain_drifted(monitor_results: dict[str, Any], say: Say, families: tuple[str, ...] = (SCENARIO_FAMILY,)
                    ) -> list[Any]:
    """Retrain the families whose alert reaches retrain.min_severity, through the gate (monitoring.retrain),
    with the monitor's summary attached to each retrain run. Only `families` are retrained (the demo keeps to
    the scenario's family to stay short); other alerting families are listed with the command to retrain."""
    from monitoring.config import load_monitoring_config, severity_rank
    from monitoring.retrain import RetrainStep, log_retrain_context, train_family

    cfg = load_monitoring_config()
    steps = []
    for family, result in monitor_results.items():
        if severity_rank(result.severity) < severity_rank(cfg.retrain.min_severity):
            why = "no alert" if result.severity is None else \
                f"{result.severity} alert is below retrain.min_severity={cfg.retrain.min_severity}"
            steps.append(RetrainStep(family, result.severity, "skipped", why))
            continue
        reason = f"{result.severity} alert: " + "; ".join(r["message"] for r in result.summary["alert"]["reasons"])
        if family not in families:
            steps.append(RetrainStep(family, result.severity, "skipped",
                                     f"{result.severity} alert; not retrained by the demo (run `tradecast retrain "
                                     f"--family {family}`)"))
            continue
        say(f"retraining {family}")
        try:
            with quiet():
                trained = train_family(family, lambda m, f=family: say(f"{f}: {m}"))
        except TradecastError as exc:
            steps.append(RetrainStep(family, result.severity, "failed", f"training failed, champion untouched: {exc}"))
            continue
        log_retrain_context(trained.run_id, result, reason)
        steps.append(RetrainStep(family, result.severity, "retrained", reason[:300], run_id=trained.run_id,
                                 version=trained.version, promoted=trained.gate_promoted,
                                 gate_reason=trained.gate_reason, champion_before=trained.champion_before,
                                 champion_after=trained.champion_after))
    return steps


def wait_for_versions(client, expected: dict[str, str], examples: dict[str, dict[str, Any]],
                      timeout: float = 120.0) -> dict[str, str]:
    """POST /admin/reload, then call each family's endpoint until it answers with the expected version."""
    client.post("/admin/reload")
    seen: dict[str, str] = {}
    deadline = time.perf_counter() + timeout
    pending = dict(expected)
    while pending and time.perf_counter() < deadline:
        for family, version in list(pending.items()):
            response = client.post(f"/{ENDPOINTS[family]}", json=examples[ENDPOINTS[family]])
            if response.status_code == 200:
                seen[family] = str(response.json()["model_version"])
                if seen[family] == str(version):
                    pending.pop(family)
        if pending:
            time.sleep(2.0)
            client.post("/admin/reload")
    return seen


# ------------------------------------------------------------------------------------------- the whole job
@dataclass
class StageTiming:
    name: str
    seconds: float
    note: str = ""


@dataclass
class DemoResult:
    """Everything the summary shows; the tests assert on it."""

    plan: DemoPlan
    decision: StateDecision
    initial_versions: dict[str, str] = field(default_factory=dict)
    backtests: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    service_url: str = ""
    api_key_location: str = ""
    traffic: TrafficStats | None = None
    bad_requests: list[BadRequestResult] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)
    monitor: dict[str, dict[str, Any]] = field(default_factory=dict)  # family -> severity, reasons, report paths
    schedule: list[tuple[pd.Timestamp, str | None]] = field(default_factory=list)  # scenario family's runs
    first_alert: dict[str, Any] | None = None
    retrain: list[Any] = field(default_factory=list)
    served_after: dict[str, str] = field(default_factory=dict)
    stages: list[StageTiming] = field(default_factory=list)
    service_exit: int | None = None
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0


class Stages:
    """Runs named stages, timing them and reporting through a display (see tradecast.cli's demo command)."""

    def __init__(self, result: DemoResult, display: Any = None) -> None:
        self.result = result
        self.display = display

    def say(self, message: str) -> None:
        if self.display is not None:
            self.display.note(message)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[Callable[[str], None]]:
        started = time.perf_counter()
        done_note = {"text": ""}

        def finish(note: str) -> None:
            done_note["text"] = note

        if self.display is not None:
            self.display.start(name)
        try:
            yield finish
        except BaseException:
            if self.display is not None:
                self.display.fail(name, time.perf_counter() - started)
            raise
        seconds = time.perf_counter() - started
        self.result.stages.append(StageTiming(name, seconds, done_note["text"]))
        if self.display is not None:
            self.display.done(name, seconds, done_note["text"])


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM (and SIGHUP) raise like Ctrl-C does, so `finally` blocks stop the service on any way out."""
    def handler(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):  # not the main thread: leave handlers alone
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, old)


def service_env() -> dict[str, str]:
    """Environment of the demo's service: this one, with the home pinned and a quick reload poll."""
    env = dict(os.environ)
    env["TRADECAST_HOME"] = str(home())
    env.setdefault("TRADECAST_SERVING__RELOAD_POLL_S", "5")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return env


def run_demo(scale: str = "small", seed: int = 42, fresh: bool = False, display: Any = None,
             port: int | None = None) -> DemoResult:
    """The main job end to end (see the module docstring); the service is stopped on every way out."""
    import httpx

    from monitoring.config import severity_rank

    started = time.perf_counter()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    plan = plan_demo(scale, seed)
    decision = decide_state(plan, fresh)
    result = DemoResult(plan=plan, decision=decision)
    stages = Stages(result, display)
    say = stages.say
    service: ServiceProcess | None = None
    with terminate_on_sigterm():
        try:
            with stages.stage("state") as done:
                if decision.action == "replace":
                    removed = wipe_owned_state()
                    done(f"{decision.action}: {decision.reason}; removed {', '.join(removed) or 'nothing'}")
                elif decision.action == "reuse":
                    reset_run_state()
                    done(f"reuse: {decision.reason}")
                else:
                    done(f"fresh: {decision.reason}")

            with stages.stage("generate data") as done:
                tables = generate_demo_tables(plan)
                done(f"--scale {scale} --seed {seed} --scenario {SCENARIO}: "
                     + ", ".join(f"{k} {len(v):,}" for k, v in tables.items())
                     + f"; {SCENARIO} from {plan.event:%Y-%m-%d}")

            if decision.action == "reuse":
                result.initial_versions = dict(decision.previous["initial_versions"])
                with stages.stage("models (reused)") as done:
                    replaced = ensure_champions(result.initial_versions,
                                                "demo rerun: roll back to the version trained at the deploy day")
                    done("champions " + ", ".join(f"{f} v{v}" for f, v in result.initial_versions.items())
                         + (f" (rolled back from {', '.join(f'{f} v{v}' for f, v in replaced.items() if v)})"
                            if replaced else ""))
            else:
                write_state({"fingerprint": plan.fingerprint, "scale": scale, "seed": seed, "scenario": SCENARIO,
                             "created": datetime.now().isoformat(timespec="seconds")})
                with stages.stage("features at the deploy day") as done:
                    write_tables(tables_known_at(tables, plan.deploy), plan.deploy)
                    build_features(say)
                    done(f"tables as known at {plan.deploy:%Y-%m-%d}; Feast definitions applied")
                with stages.stage("train demand, delay, risk") as done:
                    trained = train_all(say)
                    refused = {f: r.version for f, r in trained.items() if not r.gate_promoted}
                    ensure_champions(refused, "demo: first model of the family")
                    result.initial_versions = {f: str(r.version) for f, r in trained.items()}
                    done(", ".join(f"{f} v{r.version} ({r.selected})" for f, r in trained.items()))
                write_state({**read_state(), "initial_versions": result.initial_versions, "complete_setup": True})
            result.backtests = {f: backtest_numbers(f, v) for f, v in result.initial_versions.items()}

            with stages.stage("features up to now") as done:
                rows = write_tables(tables_known_at(tables, plan.now), plan.now)
                build_features(say)
                done(f"tables as known at {plan.now:%Y-%m-%d} ({rows['shipments']:,} shipments); sources recomputed")

            with stages.stage("start tradecast serve") as done:
                from serving.auth import resolve_api_key

                key, key_path = resolve_api_key(create=True)
                result.api_key_location = str(key_path) if key_path else "$TRADECAST_API_KEY"
                materialize_until(plan.deploy)  # the store as it was on the deploy day
                service = ServiceProcess(port or free_port(), demo_dir() / "serve.log", service_env()).start()
                result.service_url = service.url
                waited = service.wait_ready()
                done(f"{service.url} ready in {waited:.0f}s (pid {service.proc.pid}, log {service.log_path})")

            auth = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=service.url, headers=auth, timeout=120) as client:
                with stages.stage("replay traffic") as done:
                    stats = replay_traffic(client, plan, tables, say)
                    result.traffic = stats
                    result.examples = {ep: pair[0] for ep, pair in stats.examples.items() if not ep.endswith("_batch")}
                    done(f"{sum(stats.requests.values()):,} HTTP calls, "
                         + ", ".join(f"{f} {stats.items.get(f, 0):,}" for f in FAMILIES)
                         + f" predictions; p50 {np.percentile(stats.latency_ms, 50):.0f} ms per call")

                with stages.stage("bad requests") as done:
                    result.bad_requests = send_bad_requests(service.url, key, result.examples)
                    done(", ".join(f"{b.status}" for b in result.bad_requests))

                with stages.stage("ingest outcomes") as done:
                    time.sleep(2.5)  # the service flushes its prediction log every second
                    result.outcomes = ingest_demo_outcomes(outcome_frames(tables, plan))
                    done("; ".join(f"{f}: {len(v):,}" for f, v in outcome_frames(tables, plan).items()))

                with stages.stage(f"monitor {SCENARIO_FAMILY} every {MONITOR_EVERY_DAYS} days") as done:
                    runs, alert = replay_monitor_schedule(plan, SCENARIO_FAMILY, say)
                    result.schedule = [(day, r.severity) for day, r in runs]
                    result.first_alert = monitor_view(alert) if alert is not None else None
                    done(f"first alert on {runs[-1][0]:%Y-%m-%d}, {(runs[-1][0] - plan.event).days} days after the "
                         f"event: {alert.severity}" if alert is not None else
                         f"no alert in {len(runs)} runs")

                with stages.stage("monitor all families now") as done:
                    monitors = run_monitors(plan)
                    result.monitor = {f: monitor_view(r) for f, r in monitors.items()}
                    done(", ".join(f"{f} {r.severity or 'ok'}" for f, r in monitors.items()))

                with stages.stage("retrain drifted families") as done:
                    triggers = dict(monitors)
                    if alert is not None and severity_rank(alert.severity) > severity_rank(
                            triggers[SCENARIO_FAMILY].severity):
                        triggers[SCENARIO_FAMILY] = alert  # the scheduled run's alert is still open
                    result.retrain = retrain_drifted(triggers, say)
                    done("; ".join(s.line()[:140] for s in result.retrain))

                with stages.stage("serve the new version") as done:
                    promoted = {s.family: s.champion_after for s in result.retrain if s.action == "retrained"
                                and s.promoted}
                    expected = {f: promoted.get(f) or result.initial_versions[f] for f in FAMILIES}
                    result.served_after = wait_for_versions(client, expected, result.examples)
                    done(", ".join(f"{f} v{v}" for f, v in result.served_after.items()))

            with stages.stage("stop the service") as done:
                result.service_exit = service.stop()
                service = None
                done(f"exit status {result.service_exit}")
        finally:
            if service is not None:
                service.stop()
    result.seconds = time.perf_counter() - started
    write_state({**(read_state() or {}), "last_run": datetime.now().isoformat(timespec="seconds"),
                 "last_seconds": round(result.seconds, 1)})
    return result


def monitor_view(result: Any) -> dict[str, Any]:
    """The parts of a MonitorResult the summary and tests use."""
    drift = result.summary.get("drift") or {}
    perf = result.summary.get("performance") or {}
    return {"severity": result.severity,
            "reasons": [r["message"] for r in (result.summary.get("alert") or {}).get("reasons", [])],
            "html": str(result.html_path), "json": str(result.json_path),
            "rows": result.summary["window"]["rows"], "reference": result.summary["reference"]["source"],
            "drift_share": drift.get("share_drifted_features"), "drifted": drift.get("drifted_features", [])[:5],
            "performance": perf}


# ------------------------------------------------------------------------------------------- summary
PRIMARY = {"demand": ("accuracy", "higher"), "delay": ("mae", "lower"), "risk": ("fraud_recall_at_fa", "higher")}
METRIC_LABEL = {"accuracy": "accuracy (1-WAPE)", "mae": "MAE days", "fraud_recall_at_fa": "fraud recall @3% FA"}


def family_lines(result: DemoResult) -> list[str]:
    """Per family: selected model vs baselines (and the challenger) on the backtest."""
    lines = []
    for family in FAMILIES:
        numbers = dict(result.backtests.get(family, {}))
        selected = (numbers.pop("_selected", {}) or {}).get("name", "")
        metric, _ = PRIMARY[family]
        parts = []
        for cand, values in sorted(numbers.items(), key=lambda kv: (kv[0] != selected, kv[0])):
            if metric in values:
                tag = " (champion)" if cand == selected else ""
                parts.append(f"{cand}{tag} {values[metric]:.3f}")
        version = result.initial_versions.get(family, "?")
        lines.append(f"{family:<7} v{version}: {METRIC_LABEL[metric]}: " + ", ".join(parts))
    return lines


def retrain_line(step: Any) -> str:
    """One retrain step for the summary: the verdict and the gate's reason (the trigger is shown above)."""
    if step.action != "retrained":
        return step.line()
    verdict = f"PROMOTED v{step.version}" if step.promoted else f"v{step.version} NOT promoted, champion " \
        f"v{step.champion_after} kept"
    return f"{step.family}: retrained -> {verdict}: {step.gate_reason}"


def summary_text(result: DemoResult) -> str:
    """The short summary printed at the end (plain text; the CLI renders it)."""
    from training.registry import tracking_uri

    uri = tracking_uri()
    lines = [f"tradecast demo finished in {result.seconds / 60:.1f} min ({result.decision.action}: "
             f"{result.decision.reason})", "",
             f"Backtest (rolling origin, model vs baseline, window before {result.plan.deploy:%Y-%m-%d}):"]
    lines += ["  " + line for line in family_lines(result)]
    lines += ["", "MLflow: " + uri,
              f"  open the UI: mlflow ui --backend-store-uri {uri}" + (
                  f" --default-artifact-root {mlflow_dir() / 'artifacts'}" if uri.startswith("sqlite") else ""),
              "  then http://127.0.0.1:5000 (experiments tradecast-demand / -delay / -risk)", ""]
    t = result.traffic
    if t is not None:
        lines.append(f"Traffic {result.plan.deploy:%Y-%m-%d} .. {result.plan.now - pd.Timedelta(days=1):%Y-%m-%d} "
                     f"(event {SCENARIO} on {result.plan.event:%Y-%m-%d}): "
                     + ", ".join(f"{f} {t.items.get(f, 0):,}" for f in FAMILIES)
                     + f" predictions in {sum(t.requests.values()):,} calls")
    if result.bad_requests:
        lines.append("Bad requests: " + "; ".join(f"{b.what} -> {b.status}" for b in result.bad_requests))
    if result.schedule:
        lines += ["", f"Monitor of {SCENARIO_FAMILY}, replayed every {MONITOR_EVERY_DAYS} days after the event "
                      f"(labels as known each day): " + ", ".join(f"{d:%m-%d} {s or 'ok'}" for d, s in result.schedule)]
        if result.first_alert:
            view = result.first_alert
            lines += [f"  first alert {view['severity'].upper()}: " + "; ".join(view["reasons"][:2]),
                      f"  report {view['html']}"]
    lines += ["", "Monitor now (last 7 days vs the first 4 weeks served):"]
    for family, view in result.monitor.items():
        head = view["severity"].upper() if view["severity"] else "no alert"
        lines.append(f"  {family:<7} {head}" + (f": {view['reasons'][0]}" if view["reasons"] else ""))
        lines.append(f"          report {view['html']}")
    lines += ["", "Retrain (through the promotion gate):"] + ["  " + retrain_line(s) for s in result.retrain]
    if result.served_after:
        lines.append("Served after the retrain: " + ", ".join(f"{f} v{v}" for f, v in result.served_after.items()))
    lines += ["", f"Service (stopped now): {result.service_url}; restart it with `tradecast serve` "
                  f"(port 3000 by default)",
              f"API key: {result.api_key_location}", "Try it:",
              ("  KEY=$(cat " + result.api_key_location + ")") if not result.api_key_location.startswith("$")
              else "  KEY=$TRADECAST_API_KEY",
              "  curl -s -X POST http://127.0.0.1:3000/predict_delay -H \"Authorization: Bearer $KEY\" "
              "-H 'Content-Type: application/json' -d @serving/examples/predict_delay.json",
              "  curl -s -X POST http://127.0.0.1:3000/score_risk -H \"Authorization: Bearer $KEY\" "
              "-H 'Content-Type: application/json' -d @serving/examples/score_risk.json",
              "  curl -s -X POST http://127.0.0.1:3000/forecast_demand -H \"Authorization: Bearer $KEY\" "
              "-H 'Content-Type: application/json' -d @serving/examples/forecast_demand.json",
              "  curl -s http://127.0.0.1:3000/readyz"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- display
class StageBoard:
    """A live table of the demo's stages (done, running with its latest note, failed) on the terminal."""

    def __init__(self, console: Any) -> None:
        from rich.live import Live

        self.console = console
        self.rows: list[list[str]] = []  # [status, name, seconds, note]
        self.current: str | None = None
        self.started = time.perf_counter()
        self.stage_started = self.started
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)

    def _render(self):
        from rich.table import Table

        table = Table(title="tradecast demo", title_justify="left", expand=True, show_edge=False)
        table.add_column("", width=2)
        table.add_column("stage", no_wrap=True)
        table.add_column("time", justify="right", width=7)
        table.add_column("what happened", overflow="fold", ratio=1)
        for status, name, seconds, note in self.rows:
            table.add_row(status, name, seconds, note)
        if self.current is not None:
            table.add_row("[yellow]…[/]", f"[bold]{self.current}[/]",
                          f"{time.perf_counter() - self.stage_started:.0f}s", self.note_text)
        return table

    note_text = ""

    def __enter__(self) -> "StageBoard":
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

    def _refresh(self) -> None:
        self.live.update(self._render(), refresh=True)

    def start(self, name: str) -> None:
        self.current, self.stage_started, self.note_text = name, time.perf_counter(), ""
        self._refresh()

    def note(self, message: str) -> None:
        from rich.markup import escape

        self.note_text = escape(message[:200])
        self._refresh()

    def done(self, name: str, seconds: float, note: str) -> None:
        from rich.markup import escape

        self.rows.append(["[green]✓[/]", name, f"{seconds:.0f}s", escape(note)])
        self.current = None
        self._refresh()

    def fail(self, name: str, seconds: float) -> None:
        from rich.markup import escape

        self.rows.append(["[red]✗[/]", name, f"{seconds:.0f}s", "[red]failed[/] " + escape(self.note_text)])
        self.current = None
        self._refresh()


class StageLines:
    """The same reports as StageBoard, one line each, for logs and CI (no terminal to redraw)."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.last_note = 0.0

    def __enter__(self) -> "StageLines":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def start(self, name: str) -> None:
        self.console.print(f"[bold]> {name}[/]", highlight=False)

    def note(self, message: str) -> None:
        from rich.markup import escape

        self.console.print(f"    {escape(message)}", highlight=False, soft_wrap=True)

    def done(self, name: str, seconds: float, note: str) -> None:
        from rich.markup import escape

        self.console.print(f"[green]ok[/] {name} ({seconds:.0f}s): {escape(note)}", highlight=False, soft_wrap=True)

    def fail(self, name: str, seconds: float) -> None:
        self.console.print(f"[red]FAILED[/] {name} after {seconds:.0f}s", highlight=False)


def run_with_display(scale: str = "small", seed: int = 42, fresh: bool = False, port: int | None = None) -> DemoResult:
    """`tradecast demo`: run the demo under a live stage board (lines when not on a terminal), then print
    the summary."""
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel

    console = Console(file=sys.stdout)  # bound now: stages silence sys.stdout while libraries print
    display = StageBoard(console) if console.is_terminal else StageLines(console)
    with display:
        result = run_demo(scale=scale, seed=seed, fresh=fresh, display=display, port=port)
    console.print(Panel(escape(summary_text(result)), title="summary", title_align="left", expand=False))
    return result
