"""Champion loading from a real (temporary) MLflow registry, the local copy, and reload on promotion."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

SHIPMENT = {"shipment_id": "R-1", "origin_warehouse": "CN-SZX", "destination_market": "DE", "mode": "air",
            "carrier": "DHL", "weight_kg": 2.0, "declared_value": 40.0, "hs_code": "620462",
            "promised_days": 6, "created_at": "2025-12-30T08:00:00"}


def _register(seed: int) -> str:
    import mlflow

    from serving_support import MemoryFeatureSource, TinyPyfunc, train_bundles
    from training.registry import ensure_experiment, log_and_register

    bundle = train_bundles(version="x", seed=seed, n=600)["delay"]
    rows = pd.DataFrame([SHIPMENT]).assign(lane="CN-SZX>DE")
    example = pd.concat([rows, MemoryFeatureSource().lookup("delay", rows).frame], axis=1)
    with mlflow.start_run(experiment_id=ensure_experiment("delay")):
        return log_and_register("delay", TinyPyfunc(bundle), example, bundle.predict(example), {"seed": seed})


def test_champion_copy_reload_and_registry_outage(tmp_home, monkeypatch):
    from serving.loading import MlflowChampions, ServingConfig, load_champion_bundle, read_cache_record
    from serving.prediction_log import PredictionLogger
    from serving.runtime import ServingRuntime
    from serving.schemas import DelayRequest
    from serving_support import MemoryFeatureSource
    from training.registry import promote

    v1, v2 = _register(1), _register(2)
    promote("delay", v1, "first")
    champions = MlflowChampions()
    bundle = load_champion_bundle(champions, "delay")
    assert bundle.version == v1 and bundle.name == "tradecast-delay"
    assert read_cache_record("delay")["version"] == v1 and (tmp_home / "models" / "delay" / f"v{v1}").is_dir()

    config = ServingConfig(families=["delay"], reload_poll_s=0)
    runtime = ServingRuntime(config, {"delay": bundle}, MemoryFeatureSource(),
                             PredictionLogger(root=tmp_home / "predictions", flush_interval_s=0.2), champions).start()
    request = DelayRequest.model_validate(SHIPMENT)
    answers, stop = [], threading.Event()

    def traffic():
        while not stop.is_set():
            answers.append(runtime.predict("delay", request, "rid"))

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        time.sleep(0.3)
        assert runtime.reload() == {}  # alias unchanged: nothing reloaded
        promote("delay", v2, "better")
        assert runtime.reload() == {"delay": {"from": v1, "to": v2}}
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join()
    runtime.close()
    statuses = {status for status, _ in answers}
    versions = [body["model_version"] for _, body in answers]
    assert statuses == {200}  # no request failed while the model was swapped
    assert versions[0] == v1 and versions[-1] == v2 and sorted(set(versions)) == sorted({v1, v2})
    assert versions.index(v2) > 0 and all(v == v2 for v in versions[versions.index(v2):])

    # registry unreachable: start from the local copy of the current champion
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    offline = load_champion_bundle(MlflowChampions(), "delay")
    assert offline is not None and offline.version == v2
    assert offline.predict(pd.DataFrame([SHIPMENT]).assign(lane="CN-SZX>DE")).shape[0] == 1
