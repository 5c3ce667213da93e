"""What one server worker holds: config, the loaded models, the feature source and the prediction log.

`ServingRuntime.predict` / `predict_batch` are what the endpoints call; they return (HTTP status, JSON body).
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import threading
import time
from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel

from serving import predict as P
from serving.bundle import ENDPOINTS, FeatureSource, ModelBundle
from serving.coalesce import Coalescer
from serving.loading import FeastFeatureSource, MlflowChampions, ServingConfig, load_champion_bundle, load_serving_config
from serving.prediction_log import PredictionLogger
from serving.schemas import REQUEST_MODELS

logger = logging.getLogger("tradecast.serving")


class ServingRuntime:
    """Models per family (swapped atomically on reload), features, prediction log, reload polling."""

    def __init__(self, config: ServingConfig, models: dict[str, ModelBundle], features: FeatureSource | None,
                 prediction_logger: PredictionLogger, champions: MlflowChampions | None = None) -> None:
        self.config = config
        self.models = dict(models)
        self.features = features
        self.log = prediction_logger
        self.champions = champions
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._reload_lock = threading.Lock()
        self._coalescers: dict[str, Coalescer] = {}
        self._heap_frozen = False

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "ServingRuntime":
        self.log.start()
        if self.champions is not None and self.config.reload_poll_s > 0:
            self._poller = threading.Thread(target=self._poll, name="champion-reload", daemon=True)
            self._poller.start()
        return self

    def close(self) -> None:
        """Stop polling and flush the prediction log (no record lost on a clean stop)."""
        self._stop.set()
        for family, coalescer in self._coalescers.items():
            logger.info("%s: %d single requests answered in %d calls (%.2f per call)", family, coalescer.items,
                        coalescer.flushes, coalescer.items / max(coalescer.flushes, 1))
        self.log.close()

    def warm_up(self) -> None:
        """Run each family's example through features and model once (no log, no velocity push), so the
        first caller does not pay for lazy initialisation in the feature store and the model code."""
        from serving.schemas import load_example

        rows = {"demand": lambda m: P.demand_rows([m], P.default_start_date()), "delay": lambda m: P.delay_rows([m]),
                "risk": lambda m: P.risk_rows([m])}
        for family, model in self.models.items():
            if self.features is None:
                return
            try:
                request = REQUEST_MODELS[family].model_validate(load_example(ENDPOINTS[family]))
                P.score(model, self.features, family, rows[family](request))
            except Exception:
                logger.exception("warm-up of %s failed (serving continues)", family)

    def freeze_heap(self) -> None:
        """Collect once, then move every object allocated so far (libraries, models, Feast) into the collector's
        permanent generation (`gc.freeze`). A full collection otherwise walks those millions of long-lived
        objects on the event-loop thread: 0.1-0.6 s with no request answered, the p99 tail at one connection
        (measured with gc.callbacks in the bench workers). Request garbage is still collected as before.
        Called by the service once its worker has loaded; `reload` freezes again after a swap."""
        gc.collect()
        gc.freeze()
        self._heap_frozen = True

    def _refreeze(self) -> None:
        """After a model swap: let the collector see the old models again (they may sit in reference cycles),
        collect them, freeze the new ones. One pause per promotion, in the reload thread."""
        if self._heap_frozen:
            gc.unfreeze()
            self.freeze_heap()

    def ready(self) -> bool:
        """Every configured family has a model and the feature source is up."""
        return self.features is not None and all(f in self.models for f in self.config.families)

    def status(self) -> dict[str, Any]:
        return {"ready": self.ready(),
                "models": {f: {"name": m.name, "version": m.version} for f, m in self.models.items()},
                "missing": [f for f in self.config.families if f not in self.models],
                "prediction_log_pending": self.log.pending}

    # ---------------------------------------------------------------- reload
    def _poll(self) -> None:
        while not self._stop.wait(self.config.reload_poll_s):
            try:
                self.reload()
            except Exception:
                logger.exception("champion reload check failed; keeping the current models")

    def reload(self) -> dict[str, dict[str, str | None]]:
        """Load champions whose alias moved and swap them in; returns {family: {from, to}} for changes."""
        if self.champions is None:
            return {}
        changes: dict[str, dict[str, str | None]] = {}
        with self._reload_lock:
            for family in self.config.families:
                version = self.champions.champion_version(family)
                current = self.models.get(family)
                if version is None or (current is not None and current.version == str(version)):
                    continue
                bundle = self.champions.load(family, version)
                self.models = {**self.models, family: bundle}  # one assignment: readers see old or new
                changes[family] = {"from": current.version if current else None, "to": bundle.version}
                logger.info("now serving %s v%s (was %s)", family, bundle.version, current.version if current else None)
            if changes:
                self._refreeze()
        return changes

    # ---------------------------------------------------------------- predictions
    def _call(self, family: str, items: Sequence[BaseModel], request_id: str,
              positions: Sequence[int] | None = None, request_ids: Sequence[str] | None = None) -> P.PredictionResult:
        """Score items with the family's predictor and queue the log batch. `request_ids`: one per item, for
        single requests answered together (each answer and log record keeps its own id)."""
        kwargs: dict[str, Any] = {"positions": positions}
        if family == "delay":
            kwargs["alert_hours"] = self.config.alert_delay_hours
        elif family == "risk":
            kwargs["levels"] = self.config.risk_levels
        result = P.PREDICTORS[family](items, self.models[family], self.features, request_id, **kwargs)
        if request_ids is not None:
            if result.logged is not None:
                result.logged.row_request_ids = np.asarray(request_ids, dtype=object)[result.logged.item_index]
                result.logged.item_index = np.zeros(len(result.logged.item_index), dtype=np.int64)
            result.responses = [{**r, "request_id": rid} for r, rid in zip(result.responses, request_ids)]
        self.log.append(result.logged)
        return result

    def _call_requests(self, family: str, requests: Sequence[tuple[BaseModel, str]]) -> list[dict[str, Any]]:
        """Several single requests (item, request id) in one call, each answered as if scored alone."""
        ids = [rid for _, rid in requests]
        return self._call(family, [item for item, _ in requests], ids[0], request_ids=ids).responses

    async def predict_async(self, family: str, item: BaseModel, request_id: str) -> tuple[int, Any]:
        """`predict` for the async endpoints: requests that arrive together are scored together
        (serving.coalesce; `coalesce_max_items: 1` scores each on its own)."""
        down = self.unavailable(family)
        if down:
            return down
        if self.config.coalesce_max_items <= 1:
            return 200, self._call(family, [item], request_id).responses[0]
        coalescer = self._coalescers.get(family)
        if coalescer is None:
            coalescer = Coalescer(lambda requests, f=family: self._call_requests(f, requests),
                                  max_items=self.config.coalesce_max_items,
                                  linger_s=self.config.coalesce_linger_ms / 1000.0, key=family)
            self._coalescers[family] = coalescer
        return 200, await coalescer.submit((item, request_id))

    def unavailable(self, family: str) -> tuple[int, dict[str, Any]] | None:
        if family not in self.models or self.features is None:
            what = "feature store" if self.features is None else f"{family} model"
            return 503, {"error": f"{what} not loaded yet: see /readyz and the server log", "field": family}
        return None

    def predict(self, family: str, item: BaseModel, request_id: str) -> tuple[int, Any]:
        """One validated request -> (200, answer) or (503, error)."""
        down = self.unavailable(family)
        if down:
            return down
        return 200, self._call(family, [item], request_id).responses[0]

    def predict_batch(self, family: str, raw_items: Sequence[Any], request_id: str) -> tuple[int, Any]:
        """A list of raw items -> (200, answers and per-item errors in order), 413 when too long, 503 when down."""
        limit = self.config.max_batch_items
        if len(raw_items) > limit:
            return 413, {"error": f"items: {len(raw_items)} items, at most {limit} per batch", "field": "items"}
        down = self.unavailable(family)
        if down:
            return down
        good, problems = P.validate_items(REQUEST_MODELS[family], raw_items)
        answers: list[Any] = [None] * len(raw_items)
        for problem in problems:
            answers[problem.index] = problem.as_dict()
        if good:
            positions = [i for i, _ in good]
            result = self._call(family, [m for _, m in good], request_id, positions)
            for pos, response in zip(positions, result.responses):
                answers[pos] = response
        return 200, answers


def _factory(path: str):
    module, _, name = path.partition(":")
    if not name:
        raise ValueError(f"runtime_factory: '{path}' must look like module:function")
    return getattr(importlib.import_module(module), name)


def build_runtime(config: ServingConfig | None = None) -> ServingRuntime:
    """The runtime of one server worker: MLflow champions (via the local copy) and Feast, unless
    `runtime_factory` names another builder. Missing models or store leave the runtime not ready (503s)."""
    config = config or load_serving_config()
    if config.runtime_factory:
        return _factory(config.runtime_factory)(config).start()
    # a dead registry must not hold startup for minutes: few retries, short timeout
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(config.registry_timeout_s)))
    started = time.perf_counter()
    champions = MlflowChampions()
    models = {}
    for family in config.families:
        bundle = load_champion_bundle(champions, family)
        if bundle is not None:
            models[family] = bundle
    try:
        features: FeatureSource | None = FeastFeatureSource(wal=config.online_store_wal)
    except Exception:
        logger.exception("feature store unavailable: the service will not be ready")
        features = None
    log = PredictionLogger(flush_interval_s=config.prediction_log.flush_interval_s, fsync=config.prediction_log.fsync)
    runtime = ServingRuntime(config, models, features, log, champions)
    runtime.warm_up()
    logger.info("runtime loaded in %.1fs: %s", time.perf_counter() - started, runtime.status())
    return runtime.start()


