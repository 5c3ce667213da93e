"""`tradecast serve` as a real process on a free port, called over HTTP (BentoML server, workers, shutdown)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow
TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tradecast_serve_over_http(tmp_path):
    from serving.prediction_log import read_prediction_log
    from serving.schemas import load_example

    home, port = tmp_path / "home", _free_port()
    env = {k: v for k, v in os.environ.items() if k != "TRADECAST_API_KEY"}
    env.update(TRADECAST_HOME=str(home), PYTHONPATH=str(TESTS_DIR),
               TRADECAST_SERVING__RUNTIME_FACTORY="serving_support:make_runtime",
               TRADECAST_SERVING__PREDICTION_LOG__FLUSH_INTERVAL_S="120")  # only the shutdown flush writes
    tradecast = Path(sys.executable).with_name("tradecast")
    proc = subprocess.Popen([str(tradecast), "serve", "--port", str(port), "--workers", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("service did not become ready in 120 s")
        key_file = home / "api_key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        auth = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/healthz").status_code == 200
            assert http.post("/score_risk", json=load_example("score_risk")).status_code == 401
            risk = http.post("/score_risk", json=load_example("score_risk"), headers=auth)
            assert risk.status_code == 200 and risk.json()["model_name"] == "tradecast-risk"
            demand = http.post("/forecast_demand", json=load_example("forecast_demand"), headers=auth).json()
            assert len(demand["forecast"]) == 14
            batch = http.post("/predict_delay_batch", headers=auth,
                              json=[load_example("predict_delay"), {"mode": "air"}]).json()
            assert batch[0]["shipment_id"] == "SH-EXAMPLE-0001" and batch[1]["index"] == 1
            bad = http.post("/forecast_demand", json={**load_example("forecast_demand"), "horizon_days": 120},
                            headers=auth)
            assert bad.status_code == 400 and bad.json()["field"] == "horizon_days"
            metrics = http.get("/metrics").text
            assert "bentoml_service_request_total" in metrics or "bentoml_service_request_duration" in metrics
        assert not list((home / "predictions").glob("*/*.jsonl"))  # still buffered (flush interval 120 s)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    assert f"{home / 'api_key'}" in output  # serve says where the generated key is
    delay = read_prediction_log("delay", root=home / "predictions")
    assert list(delay["shipment_id"]) == ["SH-EXAMPLE-0001"]
    assert len(read_prediction_log("demand", root=home / "predictions")) == 14
    assert read_prediction_log("risk", root=home / "predictions")["request_id"].tolist() == [risk.json()["request_id"]]
