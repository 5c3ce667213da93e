"""Scale-out numbers for the `shared` profile (needs scripts/services.sh start: Redis and PostgreSQL on loopback).

    python experiments/bench_scaleout.py lookup [--scale small] [--lookups 1000]
        online feature lookup p50/p99, Redis vs SQLite, same data: one entity and a batch of 100, through
        features.store.online_features as serving calls it (tables=features.online.OnlineTables: Feast's
        OnlineStore.online_read with the views resolved once), the same function through
        FeatureStore.get_online_features (store=...), and Feast's bare get_online_features
    python experiments/bench_scaleout.py serve [--scale tiny] [--workers 1 2 4] [--duration 15] [--connections 16]
        /score_risk throughput and latency with N BentoML workers sharing Redis and the PostgreSQL registry
        (risk champion trained by the real pipeline; load from wrk)
    python experiments/bench_scaleout.py train [--scale large] [--dask-workers 2] [--family demand|risk|both]
        demand model: training-set features + LightGBM fit in one process vs a Dask LocalCluster, and how close
        the two models are on a later holdout; risk (--family risk): the risk pipeline's training set (generated
        data, computed feature sources, point-in-time join), then its P(fraud) and P(compliance) classifiers fitted
        in one process vs through lightgbm.dask, compared on the latest 15% of orders
    python experiments/bench_scaleout.py features [--scale small] [--dask-workers 2]
        the risk feature views (risk_merchant, buyer/device/ip activity) computed in one process vs over
        partitions of whole entities on a Dask LocalCluster (training.distributed.risk_features_dask), and
        whether the rows are the same
    python experiments/bench_scaleout.py all

Each part prints its numbers and appends them as one JSON line to $TRADECAST_HOME/reports/bench_scaleout.jsonl
(or --out). Work happens in a scratch home under /tmp unless --home is given. The machine's other load affects
every number: report them with the machine (cores, load) they came from.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
TRADECAST = Path(sys.executable).with_name("tradecast")


def say(msg: str) -> None:
    print(msg, flush=True)


def percentiles_ms(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples) * 1000.0
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "mean_ms": float(arr.mean()), "n": int(len(arr))}


def timed_calls(fn: Callable[[], Any], n: int, warmup: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return percentiles_ms(samples)


def services_env() -> dict[str, str]:
    """REDIS_URL / TRADECAST_PG_DSN from the environment, else from scripts/services.sh env (servers must be up)."""
    if os.environ.get("REDIS_URL") and os.environ.get("TRADECAST_PG_DSN"):
        return {"REDIS_URL": os.environ["REDIS_URL"], "TRADECAST_PG_DSN": os.environ["TRADECAST_PG_DSN"]}
    out = subprocess.run([str(ROOT / "scripts" / "services.sh"), "env"], capture_output=True, text=True, check=True)
    env = dict(line.removeprefix("export ").replace("'", "").split("=", 1) for line in out.stdout.splitlines())
    status = subprocess.run([str(ROOT / "scripts" / "services.sh"), "status"], capture_output=True, text=True)
    if status.returncode != 0:
        sys.exit("Redis/PostgreSQL are not running: scripts/services.sh start")
    return env


def with_db(url: str, db: str | int, scheme: str | None = None) -> str:
    from urllib.parse import urlparse, urlunparse

    parsed = urlparse(url)
    return urlunparse(parsed._replace(path=f"/{db}", scheme=scheme or parsed.scheme))


def fresh_pg_database(dsn: str, name: str) -> str:
    """Drop and create database `name`; returns the MLflow URI for it."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"drop database if exists {name} with (force)")
        cur.execute(f"create database {name}")
    conn.close()
    return with_db(dsn, name, scheme="postgresql+psycopg2")


def prepare_data(home: Path, scale: str, seed: int = 7) -> None:
    """Generate canonical tables and compute the feature sources into `home` (skipped if already there)."""
    os.environ["TRADECAST_HOME"] = str(home)
    if (home / "features" / "demand_series.parquet").exists():
        return
    from features.generate import generate_to_store, load_data_config
    from features.store import compute_features

    t0 = time.perf_counter()
    generate_to_store(load_data_config(None), scale=scale, seed=seed)
    t1 = time.perf_counter()
    compute_features()
    say(f"  data ({scale}) generated in {t1 - t0:.0f}s, features computed in {time.perf_counter() - t1:.0f}s")


# ----------------------------------------------------------------------------- lookup


def _lookup_rows(home: Path) -> dict[str, list[dict[str, Any]]]:
    orders = pd.read_parquet(home / "offline" / "orders.parquet").tail(2000)
    rows = [{"merchant_id": r.merchant_id, "buyer_id": r.buyer_id, "device_id": r.device_id or "", "ip": r.ip or "",
             "category": r.category or "unknown"} for r in orders.itertuples()]
    sales = pd.read_parquet(home / "offline" / "daily_sales.parquet", columns=["sku_id", "market"]).drop_duplicates()
    series = [{"series_id": f"{s}|{m}"} for s, m in zip(sales["sku_id"], sales["market"])]
    return {"risk_v1": rows, "demand_v1": series}


def bench_lookup(scale: str, lookups: int, base: Path, redis_url: str) -> dict[str, Any]:
    from features import store as fs
    from features.compute import load_features_config
    from features.online import OnlineTables

    src = base / f"lookup-{scale}"
    prepare_data(src, scale)
    results: dict[str, Any] = {"part": "lookup", "scale": scale, "lookups": lookups}
    for kind in ("sqlite", "redis"):
        home = base / f"lookup-{scale}-{kind}"  # one Feast registry per online store (intervals are per registry)
        if home.exists():
            shutil.rmtree(home)
        shutil.copytree(src, home, ignore=shutil.ignore_patterns("feast"))
        os.environ["TRADECAST_HOME"] = str(home)
        cfg = load_features_config().model_copy(update={"online_store": kind, "redis_url": redis_url})
        if kind == "redis":
            import redis

            redis.Redis.from_url(redis_url).flushdb()
        store = fs.get_store(cfg)
        fs.apply_definitions(store)
        t0 = time.perf_counter()
        fs.materialize(store)
        results[f"{kind}_materialize_s"] = time.perf_counter() - t0
        rows = _lookup_rows(home)
        tables = OnlineTables(store)  # what serving.loading.FeastFeatureSource holds (views resolved once)
        rng = np.random.default_rng(0)
        for service in ("risk_v1", "demand_v1"):
            pool = rows[service]
            refs = [f"{v}:{f}" for v, f in __import__("features.feature_repo.definitions", fromlist=["x"])
                    .service_batch_features(service, cfg)]
            keys = fs.join_keys(service)

            def one(pool=pool, service=service, via=None):
                fs.online_features(service, [pool[rng.integers(len(pool))]], store=store, tables=via)

            def batch(pool=pool, service=service, via=None):
                idx = rng.integers(len(pool), size=100)
                fs.online_features(service, [pool[i] for i in idx], store=store, tables=via)

            def bare(pool=pool, refs=refs, keys=keys):
                row = pool[rng.integers(len(pool))]
                store.get_online_features(features=refs, entity_rows=[{k: str(row.get(k, "")) for k in keys}])

            # serving path (tables=OnlineTables), the same function through FeatureStore.get_online_features,
            # and Feast's bare call (no defaults, no request-time features)
            results[f"{kind}_{service}_serving_one"] = timed_calls(lambda: one(via=tables), lookups)
            results[f"{kind}_{service}_serving_batch100"] = timed_calls(lambda: batch(via=tables),
                                                                        max(lookups // 10, 50))
            results[f"{kind}_{service}_one"] = timed_calls(one, lookups)
            results[f"{kind}_{service}_batch100"] = timed_calls(batch, max(lookups // 10, 50))
            results[f"{kind}_{service}_feast_bare_one"] = timed_calls(bare, lookups)
            for k in ("serving_one", "serving_batch100", "one", "batch100", "feast_bare_one"):
                r = results[f"{kind}_{service}_{k}"]
                say(f"  {kind:6s} {service:9s} {k:17s} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  (n={r['n']})")
    return results


# ----------------------------------------------------------------------------- serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wrk(url: str, body: dict[str, Any], key: str, duration: int, connections: int, threads: int = 2) -> dict[str, float]:
    """Run wrk (POST JSON with the bearer key); returns requests/s, latency percentiles and error counts.

    Each request scores the example order for one of 500 buyers / devices / IPs in turn, so the velocity
    features are pushed to many entities (one hot buyer would grow its 24 h order list without bound)."""
    template = json.dumps(dict(body, buyer_id="@B@", device_id="@D@", ip="@I@"))
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(
        "local counter = 0\n"
        f"local template = {json.dumps(template)}\n"
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        "request = function()\n"
        "  counter = counter + 1\n"
        "  local k = (counter * 7919 + math.random(0, 499)) % 500\n"
        '  local b = template:gsub("@B@", "BENCH-B" .. k):gsub("@D@", "BENCH-D" .. k)'
        ':gsub("@I@", "10.77." .. (k % 250) .. "." .. (k % 200))\n'
        "  return wrk.format(nil, nil, nil, b)\n"
        "end\n"
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("JSON {\\"rps\\": %f, \\"p50_ms\\": %f, \\"p99_ms\\": %f, \\"requests\\": %d, '
        '\\"non2xx\\": %d, \\"errors\\": %d}\\n", summary.requests / (summary.duration / 1e6), '
        "latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests, "
        "summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + "
        "summary.errors.timeout))\n"
        "end\n")
    out = subprocess.run(["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{duration}s", "--timeout", "30s",
                          "-s", str(script), url], capture_output=True, text=True, timeout=duration + 90)
    line = [x for x in out.stdout.splitlines() if x.startswith("JSON ")]
    if not line:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    return json.loads(line[-1][5:])


def _wait_ready(base: str, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    import httpx

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tradecast serve exited early (exit {proc.returncode}); see its log in the bench home")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"service not ready within {timeout_s}s")


def shared_profile_env(home: Path, env: dict[str, str], redis_db: int, pg_database: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("TRADECAST_FEATURES__ONLINE_STORE", "MLFLOW_TRACKING_URI")}
    out.update(TRADECAST_HOME=str(home), TRADECAST_PROFILE="shared", REDIS_URL=with_db(env["REDIS_URL"], redis_db),
               MLFLOW_TRACKING_URI=fresh_pg_database(env["TRADECAST_PG_DSN"], pg_database),
               TRADECAST_MLFLOW_ARTIFACT_ROOT=str(home / "shared-artifacts"))
    return out


def run_cli(args: list[str], env: dict[str, str], timeout: int = 3600) -> float:
    t0 = time.perf_counter()
    out = subprocess.run([str(TRADECAST), *args], env=env, cwd=env["TRADECAST_HOME"], capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"tradecast {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return time.perf_counter() - t0


def bench_serve(scale: str, workers: list[int], duration: int, connections: int, base: Path,
                env: dict[str, str], fresh: bool = False) -> dict[str, Any]:
    import redis

    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    home = base / f"serve-{scale}"
    if scale == "tiny":  # enough orders that both fraud classes have labels for the risk pipeline
        os.environ.setdefault("TRADECAST_DATA__SCALES__TINY__ORDERS", "20000")
        os.environ.setdefault("TRADECAST_RISK__BACKTEST__FOLDS", "2")  # 240 days leave room for 2 folds only
    prepare_data(home, scale)
    results: dict[str, Any] = {"part": "serve", "scale": scale, "duration_s": duration, "connections": connections}
    marker = home / "bench_serve_ready.json"
    if marker.exists() and not fresh:  # champion and Redis from an earlier run of this benchmark
        penv = json.loads(marker.read_text())
        say("  reusing the trained champion and materialized Redis of the previous run (--fresh to rebuild)")
    else:
        penv = shared_profile_env(home, env, redis_db=7, pg_database="tradecast_bench")
        redis.Redis.from_url(penv["REDIS_URL"]).flushdb()
        if (home / "feast").exists():
            shutil.rmtree(home / "feast")
        results["apply_materialize_s"] = run_cli(["features", "apply"], penv) + run_cli(["features", "materialize"], penv)
        results["train_risk_s"] = run_cli(["train", "risk"], penv)
        say(f"  risk champion trained into PostgreSQL MLflow in {results['train_risk_s']:.0f}s")
        marker.write_text(json.dumps(penv))
    body = json.loads((ROOT / "serving" / "examples" / "score_risk.json").read_text())
    key = "bench-" + os.urandom(8).hex()
    for n in workers:
        port = _free_port()
        senv = dict(penv, TRADECAST_API_KEY=key, TRADECAST_SERVING__RELOAD_POLL_S="0", TRADECAST_SERVING__FAMILIES="[risk]",
                    TRADECAST_SERVING__PREDICTION_LOG__FSYNC="false")
        # the server's output goes to a file: an unread pipe fills up with BentoML's access log and stalls it
        log = (home / f"serve_workers_{n}.log").open("w")
        proc = subprocess.Popen([str(TRADECAST), "serve", "--port", str(port), "--workers", str(n)], env=senv,
                                cwd=home, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, proc)
            _wrk(f"{url}/score_risk", body, key, 3, connections)  # warm every worker
            single = _wrk(f"{url}/score_risk", body, key, max(duration // 2, 5), 1, threads=1)
            rds = redis.Redis.from_url(penv["REDIS_URL"])
            before = int(rds.info("stats")["total_commands_processed"])
            loaded = _wrk(f"{url}/score_risk", body, key, duration, connections)
            # Redis commands per request (the online store's load per prediction, for sizing)
            loaded["redis_commands_per_request"] = (int(rds.info("stats")["total_commands_processed"]) - before - 2) / \
                max(loaded["requests"], 1)
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
        results[f"workers_{n}"] = {"c1": single, f"c{connections}": loaded}
        say(f"  /score_risk workers={n}: 1 conn p50 {single['p50_ms']:.1f} ms p99 {single['p99_ms']:.1f} ms "
            f"{single['rps']:.0f} req/s | {connections} conns {loaded['rps']:.0f} req/s p50 {loaded['p50_ms']:.1f} ms "
            f"p99 {loaded['p99_ms']:.1f} ms (non-2xx {loaded['non2xx']}, errors {loaded['errors']})")
    return results


# ----------------------------------------------------------------------------- train


def bench_train(scale: str, dask_workers: int, base: Path, family: str = "demand") -> list[dict[str, Any]]:
    """Training in one process vs on a Dask LocalCluster of `dask_workers` processes: demand, risk or both."""
    out = []
    if family in ("demand", "both"):
        out.append(bench_train_demand(scale, dask_workers, base))
    if family in ("risk", "both"):
        out.append(bench_train_risk(scale, dask_workers, base))
    return out


def bench_train_risk(scale: str, dask_workers: int, base: Path) -> dict[str, Any]:
    """Risk training set, then both calibrated classifiers fitted in one process vs with lightgbm.dask."""
    from training.config import load_family_config
    from training.distributed import (RISK_LABELS, RISK_TOLERANCE, dask_client, fit_risk, risk_agreement,
                                      risk_within_tolerance)
    from training.risk import RiskFamily

    home = base / f"train-risk-{scale}"
    t0 = time.perf_counter()
    prepare_data(home, scale)
    results: dict[str, Any] = {"part": "train", "family": "risk", "scale": scale, "dask_workers": dask_workers,
                               "prepare_s": time.perf_counter() - t0}
    cfg = load_family_config("risk")
    t0 = time.perf_counter()
    ts = RiskFamily(cfg).build_training_set(lambda m: say(f"  {m}"))
    results["training_set_s"] = time.perf_counter() - t0
    frame = ts.frame
    cut = pd.to_datetime(frame["ordered_at"]).quantile(0.85)
    ordered = pd.to_datetime(frame["ordered_at"])
    train, test = frame[ordered < cut].reset_index(drop=True), frame[ordered >= cut].reset_index(drop=True)
    results.update(train_rows=int(len(train)), holdout_rows=int(len(test)), features=len(ts.numeric) + len(ts.categorical),
                   **{f"{label}_holdout_positives": int(test[label].sum()) for label in RISK_LABELS})
    say(f"  risk ({scale}): training set {results['training_set_s']:.0f}s; {len(train):,} training / {len(test):,} "
        f"holdout orders x {results['features']} features; holdout positives "
        + ", ".join(f"{label} {int(test[label].sum())}" for label in RISK_LABELS))
    local, dist = {}, {}
    for label in RISK_LABELS:
        t0 = time.perf_counter()
        local[label] = fit_risk(train, label, ts.numeric, ts.categorical, cfg)
        results[f"{label}_local_fit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with dask_client(scheduler="", workers=dask_workers) as client:
        results["dask_cluster_start_s"] = time.perf_counter() - t0
        for label in RISK_LABELS:
            t0 = time.perf_counter()
            dist[label] = fit_risk(train, label, ts.numeric, ts.categorical, cfg, client=client)
            results[f"{label}_dask_fit_s"] = time.perf_counter() - t0
    results["within_tolerance"] = True
    for label in RISK_LABELS:
        agree = risk_agreement(local[label], dist[label], test, test[label], cfg.false_alarm_rate)
        results[f"{label}_agreement"] = agree
        results["within_tolerance"] &= risk_within_tolerance(agree)
        say(f"  {label}: fit one process {results[f'{label}_local_fit_s']:.1f}s, dask {results[f'{label}_dask_fit_s']:.1f}s"
            " | PR-AUC {pr_auc_local:.4f} vs {pr_auc_dask:.4f} (diff {pr_auc_diff:+.4f}); recall at 3% false alarms "
            "{recall_at_fa_local:.4f} vs {recall_at_fa_dask:.4f} (diff {recall_at_fa_diff:+.4f}); Brier {brier_local:.5f} "
            "vs {brier_dask:.5f}; probability correlation {p_correlation:.4f}".format(**agree))
    say(f"  dask cluster start {results['dask_cluster_start_s']:.0f}s; within RISK_TOLERANCE {RISK_TOLERANCE}: "
        f"{results['within_tolerance']}")
    return results


def bench_train_demand(scale: str, dask_workers: int, base: Path) -> dict[str, Any]:
    """Demand training set + fit in one process vs on a Dask LocalCluster of `dask_workers` processes."""
    from features.generate import generate_tables, load_data_config
    from training.config import load_family_config
    from training.distributed import agreement, dask_client, demand_training_frame, fit_demand, within_tolerance

    os.environ["TRADECAST_HOME"] = str(base / f"train-{scale}")
    t0 = time.perf_counter()
    tables = generate_tables(load_data_config(None), scale=scale, seed=7)
    sales, skus = tables["daily_sales"], tables["skus"]
    del tables
    results: dict[str, Any] = {"part": "train", "family": "demand", "scale": scale, "dask_workers": dask_workers,
                               "daily_sales_rows": int(len(sales)), "generate_s": time.perf_counter() - t0}
    say(f"  {scale}: {len(sales):,} daily_sales rows generated in {results['generate_s']:.0f}s")
    cfg = load_family_config("demand")

    t0 = time.perf_counter()
    frame, numeric, categorical = demand_training_frame(sales, skus, cfg)
    results["local_features_s"] = time.perf_counter() - t0
    cut = frame["as_of"].quantile(0.85)
    train, test = frame[frame["as_of"] < cut], frame[frame["as_of"] >= cut]
    results["train_rows"], results["holdout_rows"] = int(len(train)), int(len(test))
    t0 = time.perf_counter()
    local = fit_demand(train, numeric, categorical, cfg)
    results["local_fit_s"] = time.perf_counter() - t0
    say(f"  one process: features+examples {results['local_features_s']:.0f}s, fit {results['local_fit_s']:.0f}s "
        f"({len(train):,} rows x {len(numeric) + len(categorical)} features, 3 quantile models)")

    t0 = time.perf_counter()
    with dask_client(scheduler="", workers=dask_workers) as client:
        results["dask_cluster_start_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        dframe, _, _ = demand_training_frame(sales, skus, cfg, client=client)
        results["dask_features_s"] = time.perf_counter() - t0
        same = dframe.shape == frame.shape and dframe[numeric].equals(frame[numeric])
        results["dask_features_identical"] = bool(same)
        t0 = time.perf_counter()
        dist = fit_demand(train, numeric, categorical, cfg, client=client)
        results["dask_fit_s"] = time.perf_counter() - t0
    say(f"  dask ({dask_workers} workers): cluster start {results['dask_cluster_start_s']:.0f}s, features+examples "
        f"{results['dask_features_s']:.0f}s (identical: {same}), fit {results['dask_fit_s']:.0f}s")
    agree = agreement(local, dist, test, test["units"])
    results["agreement"] = agree
    results["within_tolerance"] = within_tolerance(agree)
    say("  holdout: accuracy one process {accuracy_local:.4f}, dask {accuracy_dask:.4f} (diff {accuracy_diff:+.4f}); "
        "P50 correlation {p50_correlation:.4f}; coverage {coverage_local:.3f} vs {coverage_dask:.3f}".format(**agree))
    return results


# ----------------------------------------------------------------------------- features


def bench_features(scale: str, dask_workers: int, base: Path) -> dict[str, Any]:
    """Risk feature views in one process (features.compute) vs on a Dask LocalCluster (risk_features_dask)."""
    from features.compute import ACTIVITY_KEYS, compute_activity, compute_risk_merchant, load_features_config
    from features.generate import generate_tables, load_data_config
    from training.distributed import dask_client, risk_features_dask

    os.environ["TRADECAST_HOME"] = str(base / f"features-{scale}")
    tables = generate_tables(load_data_config(None), scale=scale, seed=7)
    orders, merchants, shipments = tables["orders"], tables["merchants"], tables["shipments"]
    cfg = load_features_config()
    results: dict[str, Any] = {"part": "features", "scale": scale, "dask_workers": dask_workers,
                               "orders": int(len(orders)), "shipments": int(len(shipments))}
    t0 = time.perf_counter()
    local = {"risk_merchant": (compute_risk_merchant(orders, merchants, shipments, cfg), "merchant_id")}
    for view, (key, prefix) in ACTIVITY_KEYS.items():
        local[view] = (compute_activity(orders, key, prefix), key)
    results["local_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with dask_client(scheduler="", workers=dask_workers) as client:
        results["dask_cluster_start_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        dist = risk_features_dask(orders, merchants, shipments, cfg, client=client)
        results["dask_s"] = time.perf_counter() - t0
    same = True
    for view, (frame, key) in local.items():
        expected = frame.sort_values([key, "event_timestamp"], kind="mergesort").reset_index(drop=True)
        try:
            pd.testing.assert_frame_equal(expected, dist[view], check_dtype=False, rtol=1e-9, atol=1e-6)
            results[f"{view}_rows"] = int(len(expected))
        except AssertionError as exc:
            same = False
            say(f"  {view}: differs: {str(exc)[:300]}")
    results["same_rows"] = same
    say(f"  {scale}: {len(orders):,} orders; 4 risk views in one process {results['local_s']:.1f}s, on Dask "
        f"({dask_workers} workers) {results['dask_s']:.1f}s after a {results['dask_cluster_start_s']:.0f}s cluster "
        f"start; same rows: {same}")
    return results


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["lookup", "serve", "train", "features", "all"])
    parser.add_argument("--scale", default=None,
                        help="data scale (lookup: small, serve: tiny, train: large, features: small)")
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--dask-workers", type=int, default=2)
    parser.add_argument("--family", choices=["demand", "risk", "both"], default="demand",
                        help="train: which family to time one process vs Dask (default demand)")
    parser.add_argument("--fresh", action="store_true", help="serve: retrain and re-materialize even if a run left them")
    parser.add_argument("--home", type=Path, default=None, help="scratch folder (default: a new one under /tmp)")
    parser.add_argument("--out", type=Path, default=None, help="JSON lines file to append results to")
    args = parser.parse_args(argv)

    base = args.home or Path(tempfile.mkdtemp(prefix="tradecast-bench-scaleout-"))
    base.mkdir(parents=True, exist_ok=True)
    say(f"scratch: {base}; cores: {os.cpu_count()}; load average: {os.getloadavg()[0]:.1f}")
    out = args.out or base / "bench_scaleout.jsonl"
    parts = ["lookup", "serve", "train", "features"] if args.part == "all" else [args.part]
    for part in parts:
        say(f"== {part}")
        if part == "lookup":
            env = services_env()
            found = [bench_lookup(args.scale or "small", args.lookups, base, with_db(env["REDIS_URL"], 8))]
        elif part == "serve":
            found = [bench_serve(args.scale or "tiny", args.workers, args.duration, args.connections, base,
                                 services_env(), args.fresh)]
        elif part == "features":
            found = [bench_features(args.scale or "small", args.dask_workers, base)]
        else:
            found = bench_train(args.scale or "large", args.dask_workers, base, args.family)
        for res in found:
            res["load_average"] = os.getloadavg()[0]
            res["cores"] = os.cpu_count()
            with open(out, "a") as fh:
                fh.write(json.dumps(res, default=float) + "\n")
    say(f"results appended to {out}")


if __name__ == "__main__":
    main()
