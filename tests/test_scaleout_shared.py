"""The `shared` profile against real servers: Feast on Redis (materialize, lookup, push, worker restart) and
MLflow tracking + registry on PostgreSQL. Slow: they start processes and talk to redis-server / postgres."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scaleout_fixtures import shared_env, shared_services  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_store(shared_env):
    """Tiny data -> feature sources -> Feast apply -> materialize into Redis, in the shared profile's home."""
    from features import store as fs
    from features.generate import generate_to_store, load_data_config

    # tiny, with enough orders that fraud labels of both classes have arrived for the risk pipeline
    os.environ["TRADECAST_DATA__SCALES__TINY__ORDERS"] = "20000"
    generate_to_store(load_data_config(None), scale="tiny", seed=7)
    fs.compute_features()
    store = fs.get_store()
    fs.apply_definitions(store)
    summary = fs.materialize(store)
    return store, summary


def test_profile_puts_feast_online_store_on_redis(redis_store, shared_services):
    import redis

    store, summary = redis_store
    assert store.config.online_store.type == "redis"
    assert {"demand_series", "buyer_activity", "delay_lane"} <= set(summary.views)
    # the rows are really in this Redis database, not in a local SQLite file
    assert redis.Redis.from_url(shared_services.redis_url).dbsize() > 100
    from tradecast.paths import feast_dir

    assert not (feast_dir() / "online_store.db").exists()


def test_online_lookup_on_redis_returns_the_materialized_values(redis_store):
    from features import store as fs
    from tradecast.paths import feature_data_dir

    store, _ = redis_store
    source = pd.read_parquet(feature_data_dir() / "demand_series.parquet")
    latest = source.sort_values("event_timestamp").groupby("series_id").tail(1).set_index("series_id")
    series = latest.index[:3].tolist()
    entities = [{"series_id": s} for s in series] + [{"series_id": "no-such-sku|US"}]
    result = fs.online_features("demand_v1", entities, store=store)
    assert result.defaults_used == [False, False, False, True]
    got = result.frame["units_mean_28d"].to_numpy()[:3]
    want = latest.loc[series, "units_mean_28d"].to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)


def test_pushed_velocity_features_are_read_back_from_redis(redis_store):
    from features import store as fs

    store, _ = redis_store
    buyer = f"B-push-{uuid.uuid4().hex[:8]}"
    now = pd.Timestamp.now(tz="UTC").floor("s")
    orders = [{"buyer_id": buyer, "device_id": f"D-{buyer}", "ip": f"10.9.{i}.1", "amount": 20.0 + i,
               "ordered_at": now - pd.Timedelta(minutes=30 - 10 * i)} for i in range(3)]
    assert fs.push_order_velocity(store, orders) > 0
    row = fs.online_features("risk_v1", [{"buyer_id": buyer, "device_id": f"D-{buyer}", "ip": "10.9.2.1"}],
                             store=store).frame.iloc[0]
    assert row["buyer_orders_1h"] == 3 and row["device_orders_1h"] == 3 and row["ip_orders_1h"] == 1
    assert row["buyer_amount_24h"] == pytest.approx(63.0)


WORKER = textwrap.dedent("""
    import json, sys
    import pandas as pd
    from features import store as fs
    buyer, minutes_ago = sys.argv[1], [int(m) for m in sys.argv[2].split(",") if m]
    now = pd.Timestamp.now(tz="UTC").floor("s")
    orders = [{"buyer_id": buyer, "amount": 10.0, "ordered_at": now - pd.Timedelta(minutes=m)} for m in minutes_ago]
    if orders:
        fs.push_order_velocity(None, orders)
    row = fs.online_features("risk_v1", [{"buyer_id": buyer}]).frame.iloc[0]
    print(json.dumps({"orders_1h": float(row["buyer_orders_1h"]), "orders_24h": float(row["buyer_orders_24h"]),
                      "store": fs.default_store().config.online_store.type}))
""")


def _worker(buyer: str, minutes_ago: list[int]) -> dict:
    """One serving-worker-like process: push orders (if any), read the buyer's velocity, exit."""
    out = subprocess.run([sys.executable, "-c", WORKER, buyer, ",".join(map(str, minutes_ago))], env=dict(os.environ),
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_worker_restart_loses_no_velocity_counts(redis_store):
    """Counts pushed by a worker process live in Redis: a restarted worker (new process) and another worker
    continue from them instead of starting at zero."""
    buyer = f"B-restart-{uuid.uuid4().hex[:8]}"
    first = _worker(buyer, [40, 20])  # worker 1 scores two orders, then stops
    assert first == {"orders_1h": 2.0, "orders_24h": 2.0, "store": "redis"}
    second = _worker(buyer, [0])  # restarted worker: one more order, counted on top of the stored two
    assert second["orders_1h"] == 3.0 and second["orders_24h"] == 3.0


def test_mlflow_tracking_and_registry_on_postgres(shared_env, shared_services, tiny_tables):
    """Log a run, register a version, move the champion alias and load it back, with MLflow's backend store on
    PostgreSQL and artifacts under the shared artifact root."""
    import mlflow
    import psycopg2

    from training import registry
    from training.config import load_family_config
    from training.distributed import demand_training_frame, fit_demand
    from training.pyfunc import TradecastModel

    assert registry.tracking_uri().startswith("postgresql+psycopg2://")
    cfg = load_family_config("demand").model_copy(update={"max_training_rows": 3000})
    cfg = cfg.model_copy(update={"lightgbm": cfg.lightgbm.model_copy(update={"n_estimators": 30})})
    frame, numeric, categorical = demand_training_frame(tiny_tables["daily_sales"], tiny_tables["skus"], cfg)
    est = fit_demand(frame, numeric, categorical, cfg)
    inputs = numeric + categorical + ["target_date", "as_of"]
    model = TradecastModel("demand", {"model": est}, {"input_columns": inputs, "output_columns": ["p10", "p50", "p90"],
                                                      "frequency": "D", "estimator": "lightgbm"})
    example = frame[inputs].head(5)
    expected = model.predict_frame(example)

    artifact_root = os.environ["TRADECAST_MLFLOW_ARTIFACT_ROOT"]
    experiment_id = registry.ensure_experiment("demand")
    assert mlflow.get_experiment(experiment_id).artifact_location.startswith(
        Path(artifact_root).resolve().as_uri())
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_metric("accuracy", 0.5)
        version = registry.log_and_register("demand", model, example, expected, {"metric.accuracy": 0.5})
    registry.promote("demand", version, "shared-profile test")
    loaded, champion = registry.load_champion("demand")
    assert champion == version
    pd.testing.assert_frame_equal(loaded.predict_frame(example), expected)
    assert any(p.name == "MLmodel" for p in Path(artifact_root).rglob("MLmodel"))

    # the tracking data is in PostgreSQL (this session's database), not in a local SQLite file
    with psycopg2.connect(with_database(shared_services)) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from runs where run_uuid = %s", (run.info.run_id,))
        assert cur.fetchone()[0] == 1
        cur.execute("select version from registered_model_aliases where name = 'tradecast-demand' and alias = 'champion'")
        assert str(cur.fetchone()[0]) == version
    from tradecast.paths import mlflow_dir

    assert not (mlflow_dir() / "mlflow.db").exists()


def with_database(services) -> str:
    from scaleout_fixtures import with_db

    return with_db(services.pg_dsn, services.database)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tradecast(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("tradecast")
    return subprocess.run([str(exe), *args], env=dict(os.environ), cwd=os.environ["TRADECAST_HOME"],
                          capture_output=True, text=True, timeout=timeout)


class _Server:
    """`tradecast serve` in its own process group on a free port; stopped with SIGINT (clean shutdown)."""

    def __init__(self, workers: int, key: str):
        import signal  # noqa: F401

        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, TRADECAST_API_KEY=key, TRADECAST_SERVING__FAMILIES="[risk]",
                   TRADECAST_SERVING__RELOAD_POLL_S="0")
        exe = Path(sys.executable).with_name("tradecast")
        self.proc = subprocess.Popen([str(exe), "serve", "--port", str(self.port), "--workers", str(workers)],
                                     env=env, cwd=os.environ["TRADECAST_HOME"], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def wait_ready(self, timeout_s: float = 180) -> None:
        import time

        import httpx

        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"tradecast serve exited:\n{self.proc.stdout.read()[-4000:]}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"tradecast serve not ready in {timeout_s}s:\n{self.proc.stdout.read()[-4000:]}")

    def stop(self) -> str:
        import signal

        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, _ = self.proc.communicate()
        return out


def test_shared_profile_end_to_end(redis_store, shared_services):
    """materialize (fixture) -> train risk into MLflow on PostgreSQL -> serve with 2 workers sharing Redis and
    the registry -> score orders (each pushes velocity) -> restart the service -> monitor."""
    import httpx
    import psycopg2

    from features import store as fs
    from serving.schemas import load_example

    os.environ.update(TRADECAST_RISK__LIGHTGBM__N_ESTIMATORS="40", TRADECAST_RISK__BACKTEST__FOLDS="2")
    trained = _tradecast(["train", "risk"])
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    with psycopg2.connect(with_database(shared_services)) as conn, conn.cursor() as cur:
        cur.execute("select max(version::int) from model_versions where name = 'tradecast-risk'")
        version = str(cur.fetchone()[0])
        cur.execute("select count(*) from registered_model_aliases where name = 'tradecast-risk' and alias = 'champion'")
        has_champion = cur.fetchone()[0] == 1
    if not has_champion:  # the gate may keep a tiny-data model as challenger; ops can still promote by hand
        promoted = _tradecast(["models", "promote", "risk", version, "--yes"])
        assert promoted.returncode == 0, promoted.stderr

    key = "k-" + uuid.uuid4().hex
    auth = {"Authorization": f"Bearer {key}"}
    buyer = f"B-e2e-{uuid.uuid4().hex[:8]}"
    now = pd.Timestamp.now(tz="UTC").floor("s")

    def order(i: int) -> dict:
        return {**load_example("score_risk"), "order_id": f"O-E2E-{i}", "buyer_id": buyer, "device_id": f"D-{buyer}",
                "ordered_at": (now - pd.Timedelta(minutes=50 - i)).strftime("%Y-%m-%dT%H:%M:%SZ")}

    server = _Server(workers=2, key=key)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.base, timeout=30) as http:
            answers = [http.post("/score_risk", json=order(i), headers=auth) for i in range(6)]
    finally:
        server.stop()
    assert [a.status_code for a in answers] == [200] * 6, answers[0].text
    assert {(a.json()["model_name"], a.json()["model_version"]) for a in answers} == {("tradecast-risk", version)}
    assert 0.0 <= answers[-1].json()["p_fraud"] <= 1.0

    # whichever worker served each order, every push landed in the shared Redis
    row = fs.online_features("risk_v1", [{"buyer_id": buyer, "device_id": f"D-{buyer}"}]).frame.iloc[0]
    assert row["buyer_orders_1h"] == 6 and row["device_orders_1h"] == 6

    server = _Server(workers=1, key=key)  # restarted service: counts continue from Redis
    try:
        server.wait_ready()
        again = httpx.post(f"{server.base}/score_risk", json=order(6), headers=auth, timeout=30)
    finally:
        server.stop()
    assert again.status_code == 200, again.text
    row = fs.online_features("risk_v1", [{"buyer_id": buyer}]).frame.iloc[0]
    assert row["buyer_orders_1h"] == 7

    # the registered model's files are under the profile's shared artifact root, not in a local folder
    assert list((Path(os.environ["TRADECAST_MLFLOW_ARTIFACT_ROOT"]) / "risk").rglob("MLmodel"))
    assert "Dask: 2 workers" in trained.stdout + trained.stderr  # the profile ran the pipeline on Dask

    monitored = _tradecast(["monitor", "--family", "risk", "--no-webhook"])
    assert monitored.returncode in (0, 1), monitored.stdout[-3000:] + monitored.stderr[-3000:]  # 1 = drift alert
    from tradecast.paths import reports_dir

    assert any(reports_dir().rglob("*.json")), "monitor wrote no JSON summary"
