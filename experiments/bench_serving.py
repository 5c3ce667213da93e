"""Serving speed: p50 / p99 latency and throughput per endpoint at 1 and 16 connections, with wrk.

Starts `tradecast serve` and a floor service (experiments/bench_floor.py: a bare BentoML endpoint calling the
same LightGBM booster on a fixed vector) on loopback, loads each with wrk, and prints a table with the ratio
of every endpoint to the floor. wrk is installed from Debian (apt-get) when missing.

    .venv/bin/python experiments/bench_serving.py                    # champions + Feast from $TRADECAST_HOME
    .venv/bin/python experiments/bench_serving.py --runtime tiny     # tiny LightGBM models, in-memory features

Targets on 2 cores for /score_risk: p50 <= 5 ms and p99 <= 30 ms at 1 connection, >= 600 req/s at 16.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "serving" / "examples"
TARGETS = {"score_risk": {"p50_ms": 5.0, "p99_ms": 30.0, "rps16": 600.0}}

# wrk script: POST the body; for score_risk each request is a new order from one of 500 buyers/devices/IPs,
# so the velocity push and lookup work on realistic, bounded per-entity histories.
LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer KEY"
local template = [==[BODY]==]
local vary = VARY
local n = 0
request = function()
  if not vary then return wrk.format(nil, nil, nil, template) end
  n = n + 1
  local k = n % 500
  local body = template:gsub("O%-EXAMPLE%-0001", "O-BENCH-" .. n)
  body = body:gsub('"ip": "[^"]*"', '"ip": "10.77.' .. math.floor(k / 250) .. '.' .. (k % 250) .. '"')
  body = body:gsub('"device_id": "[^"]*"', '"device_id": "DBENCH' .. k .. '"')
  body = body:gsub('"buyer_id": "[^"]*"', '"buyer_id": "BBENCH' .. k .. '"')
  return wrk.format(nil, nil, nil, body)
end
"""


def ensure_wrk() -> str:
    """Path of wrk, installing the Debian package when it is missing."""
    path = shutil.which("wrk")
    if path:
        return path
    print("wrk not found: installing it with apt-get (Debian package 'wrk')", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    path = shutil.which("wrk")
    if not path:
        sys.exit("wrk is still missing after apt-get install")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict[str, str], url: str, log: Path, timeout: float = 180) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{cmd[:4]} exited early; see {log}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(proc)
    sys.exit(f"{url} not ready after {timeout:.0f}s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def parse_wrk(text: str) -> dict[str, float]:
    """p50 / p99 (ms), requests per second and error counts from `wrk --latency` output."""
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}

    def pct(p: str) -> float:
        m = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        return float(m.group(1)) * unit[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:.*", text)
    return {"p50_ms": pct("50"), "p99_ms": pct("99"), "rps": float(rps.group(1)) if rps else float("nan"),
            "non2xx": float(non2xx.group(1)) if non2xx else 0.0, "socket_errors": errors.group(0) if errors else ""}


def run_wrk(wrk: str, url: str, body: str, key: str, vary: bool, connections: int, seconds: int,
            workdir: Path) -> dict[str, float]:
    script = workdir / f"req_{abs(hash((url, connections)))}.lua"
    script.write_text(LUA.replace("KEY", key).replace("BODY", body).replace("VARY", "true" if vary else "false"))
    threads = min(connections, 2)
    out = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def stage_breakdown(runtime_kind: str, repeats: int = 30) -> None:
    """CPU ms per stage of one request, in this process: request rows, feature lookup, velocity push (risk),
    model, prediction-log serialisation. Shows where the time of an endpoint goes beyond the HTTP layer."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(ROOT / "tests"))
    from serving import predict as P
    from serving.bundle import ENDPOINTS
    from serving.loading import ServingConfig
    from serving.prediction_log import batch_records
    from serving.runtime import build_runtime
    from serving.schemas import REQUEST_MODELS, load_example

    cfg = ServingConfig(reload_poll_s=0, runtime_factory="serving_support:make_runtime" if runtime_kind == "tiny" else None)
    runtime = build_runtime(cfg)
    rows_of = {"demand": lambda m: P.demand_rows([m], P.default_start_date()), "delay": lambda m: P.delay_rows([m]),
               "risk": lambda m: P.risk_rows([m])}

    def cpu_ms(fn) -> float:
        fn()
        t = time.process_time()
        for _ in range(repeats):
            fn()
        return (time.process_time() - t) / repeats * 1000

    print(f"\nCPU ms per single request and stage, in-process, runtime={runtime_kind}, {repeats} repeats")
    print(f"{'family':8} {'validate':>9} {'rows':>7} {'lookup':>8} {'push':>8} {'model':>8} {'log json':>9} {'total':>8}")
    for family, model in runtime.models.items():
        body = load_example(ENDPOINTS[family])
        request = REQUEST_MODELS[family].model_validate(body)
        # risk on a LightGBM champion with the Feast source takes the column-array path (serving.predict)
        columns = family == "risk" and getattr(model, "supports_columns", False) \
            and hasattr(runtime.features, "lookup_columns")
        if columns:
            rows = P.risk_columns([request])
            looked_up, _ = runtime.features.lookup_columns(family, rows)
            lookup = lambda: runtime.features.lookup_columns(family, rows)  # noqa: E731
            predict = lambda: model.predict_columns({**rows, **looked_up})  # noqa: E731
            make_rows = lambda: P.risk_columns([request])  # noqa: E731
        else:
            rows = rows_of[family](request)
            vectors = runtime.features.lookup(family, rows)
            model_input = pd.concat([rows[[c for c in rows.columns if c not in vectors.frame.columns]]
                                     .reset_index(drop=True), vectors.frame.reset_index(drop=True)], axis=1)
            lookup = lambda: runtime.features.lookup(family, rows)  # noqa: E731
            predict = lambda: model.predict(model_input)  # noqa: E731
            make_rows = lambda: rows_of[family](request)  # noqa: E731
        result = P.PREDICTORS[family]([request], model, runtime.features, "bench")
        t = {"validate": cpu_ms(lambda: REQUEST_MODELS[family].model_validate(body)),
             "rows": cpu_ms(make_rows),
             "lookup": cpu_ms(lookup),
             "push": cpu_ms(lambda: runtime.features.push_orders(rows)) if family == "risk" else 0.0,
             "model": cpu_ms(predict),
             "log json": cpu_ms(lambda: batch_records(result.logged))}
        print(f"{family:8} " + " ".join(f"{v:{9 if k in ('validate', 'log json') else 8}.2f}" for k, v in t.items())
              + f" {sum(t.values()):8.2f}")
    runtime.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtime", choices=["real", "tiny"], default="real",
                    help="real: champions + Feast from $TRADECAST_HOME; tiny: the test models (tests/serving_support.py)")
    ap.add_argument("--workers", type=int, default=2, help="API workers for both services")
    ap.add_argument("--seconds", type=int, default=10, help="wrk duration per run")
    ap.add_argument("--endpoints", default="score_risk,predict_delay,forecast_demand")
    ap.add_argument("--connections", default="1,16")
    ap.add_argument("--breakdown", action="store_true", help="only print in-process CPU time per request stage")
    args = ap.parse_args()
    if args.breakdown:
        stage_breakdown(args.runtime)
        return

    wrk = ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="True", TRADECAST_API_KEY="bench-key", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    if args.runtime == "tiny":
        env["TRADECAST_SERVING__RUNTIME_FACTORY"] = "serving_support:make_runtime"
        env.setdefault("TRADECAST_HOME", str(workdir / "home"))
    env["TRADECAST_SERVING__RELOAD_POLL_S"] = "0"
    tradecast = Path(sys.executable).with_name("tradecast")
    port, floor_port = free_port(), free_port()
    overrides = json.dumps({"services": {"floor": {"workers": args.workers}}})
    print(f"starting tradecast serve (:{port}) and the floor (:{floor_port}) with {args.workers} worker(s), "
          f"runtime={args.runtime}, TRADECAST_HOME={env.get('TRADECAST_HOME', '(default)')}", flush=True)
    served = start([str(tradecast), "serve", "--port", str(port), "--workers", str(args.workers)], env,
                   f"http://127.0.0.1:{port}", workdir / "serve.log")
    floor = None
    try:
        floor = start([sys.executable, "-m", "bentoml", "serve", "experiments.bench_floor:FloorService", "--port",
                       str(floor_port), "--host", "127.0.0.1", "--working-dir", str(ROOT)],
                      {**env, "BENTOML_CONFIG_OVERRIDES": overrides}, f"http://127.0.0.1:{floor_port}",
                      workdir / "floor.log")
        conns = [int(c) for c in args.connections.split(",")]
        rows = []
        risk_body = (EXAMPLES / "score_risk.json").read_text()
        for c in conns:
            rows.append(("floor", c, run_wrk(wrk, f"http://127.0.0.1:{floor_port}/floor", risk_body, "x", False, c,
                                             args.seconds, workdir)))
        for name in args.endpoints.split(","):
            body = (EXAMPLES / f"{name}.json").read_text()
            # warm up (first requests load code paths and caches)
            for _ in range(20):
                httpx.post(f"http://127.0.0.1:{port}/{name}", content=body, timeout=30,
                           headers={"Authorization": "Bearer bench-key", "Content-Type": "application/json"})
            for c in conns:
                rows.append((name, c, run_wrk(wrk, f"http://127.0.0.1:{port}/{name}", body, "bench-key",
                                              name == "score_risk", c, args.seconds, workdir)))
    finally:
        stop(served)
        if floor is not None:
            stop(floor)

    floor_by_c = {c: r for n, c, r in rows if n == "floor"}
    print(f"\nwrk {args.seconds}s per run on loopback, {os.cpu_count()} CPUs, {args.workers} worker(s), "
          f"runtime={args.runtime}")
    print(f"{'endpoint':18} {'conns':>5} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9} {'non-2xx':>8} "
          f"{'p50 x floor':>11} {'req/s / floor':>13}")
    for name, c, r in rows:
        f = floor_by_c[c]
        print(f"{name:18} {c:5d} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['rps']:9.0f} {r['non2xx']:8.0f} "
              f"{r['p50_ms'] / f['p50_ms']:11.2f} {r['rps'] / f['rps']:13.2f}")
    for name, target in TARGETS.items():
        got = {c: r for n, c, r in rows if n == name}
        if 1 in got and 16 in got:
            ok = (got[1]["p50_ms"] <= target["p50_ms"], got[1]["p99_ms"] <= target["p99_ms"],
                  got[16]["rps"] >= target["rps16"])
            print(f"\n/{name} targets: p50 {got[1]['p50_ms']:.2f} <= {target['p50_ms']} ms: {'yes' if ok[0] else 'NO'}; "
                  f"p99 {got[1]['p99_ms']:.2f} <= {target['p99_ms']} ms: {'yes' if ok[1] else 'NO'}; "
                  f"{got[16]['rps']:.0f} >= {target['rps16']:.0f} req/s at 16: {'yes' if ok[2] else 'NO'}")
    print(f"logs: {workdir}")


if __name__ == "__main__":
    main()
