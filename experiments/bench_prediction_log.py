"""Micro-benchmark of the prediction-log flush: CPU microseconds per record to serialise and write risk batches.

Builds risk batches shaped like the /score_risk column path (the request fields of RiskRequest, the risk_v1
feature names from features/feature_repo/definitions.py plus the derived entity columns, the four outputs), one
order per batch and coalesced batches of 8-16 orders, and times (process CPU time, not wall clock: the machine is
shared) the pandas-based writer this replaced (frozen copy in tests/test_serving_prediction_log_format.py) against
serving.prediction_log, serialising + appending to a temporary file as PredictionLogger.flush does.

    nice .venv/bin/python experiments/bench_prediction_log.py [--records 600] [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_serving_prediction_log_format import legacy_lines  # noqa: E402  (the old writer, frozen)

from serving.predict import LoggedBatch, RISK_TIMES  # noqa: E402
from serving.prediction_log import _append, record_lines  # noqa: E402


def risk_feature_fields() -> list[tuple[str, str]]:
    """(name, kind) of the risk_v1 features as the column lookup returns them (state columns are not features)."""
    from features.compute import load_features_config
    from features.feature_repo.definitions import SERVICES, view_feature_fields
    from features.on_demand import ON_DEMAND_OUTPUTS

    cfg = load_features_config()
    views, on_demand = SERVICES["risk_v1"]
    fields = [(n, k) for v in views for n, k in view_feature_fields(v, cfg) if k != "state"]
    return fields + [(n, "float") for v in on_demand for n in ON_DEMAND_OUTPUTS[v]]


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def risk_batch(k: int, n: int, rng: np.random.Generator, fields: list[tuple[str, str]]) -> LoggedBatch:
    """One /score_risk call of n orders (n > 1: coalesced single requests, each with its request id)."""
    ordered = (np.datetime64("2026-03-02T09:30:00") + rng.integers(0, 3600, n).astype("timedelta64[s]")).astype("datetime64[ns]")
    created = np.where(rng.random(n) < 0.1, np.datetime64("NaT"), np.datetime64("2025-06-01T00:00:00")).astype("datetime64[ns]")
    inputs = {
        "order_id": _objects([f"O{k}-{i}" for i in range(n)]), "ordered_at": ordered,
        "buyer_id": _objects([f"B{rng.integers(0, 5000):05d}" for _ in range(n)]), "account_created_at": created,
        "merchant_id": _objects([f"M{rng.integers(0, 300):05d}" for _ in range(n)]),
        "sku_id": _objects([None] * n), "category": _objects(["electronics"] * n), "market": _objects(["US"] * n),
        "amount": rng.uniform(2, 900, n), "quantity": rng.integers(1, 4, n).astype(np.int64),
        "payment_method": _objects(["card"] * n), "ip": _objects([f"198.51.100.{i % 250}" for i in range(n)]),
        "device_id": _objects([None if i % 4 == 0 else f"DEV-{i}" for i in range(n)]),
        "ip_country": _objects(["US"] * n), "card_country": _objects(["US"] * n),
        "shipping_country": _objects(["US"] * n), "declared_value": rng.uniform(1, 500, n),
        "hs_code": _objects(["8507.60"] * n), "item_description": _objects(["lithium battery pack"] * n),
    }
    assert set(RISK_TIMES) <= set(inputs)
    features: dict[str, np.ndarray] = {
        "order_category": inputs["category"], "category": inputs["category"], "device_id": inputs["device_id"],
        "ip": inputs["ip"], "account_age_days": ((ordered - created) / np.timedelta64(1, "D")).astype(float),
        "event_timestamp": ordered,
    }
    for name, kind in fields:
        features[name] = _objects(["A"] * n) if kind == "str" else np.where(rng.random(n) < 0.05, np.nan, rng.random(n) * 100)
    outputs = {"p_fraud": rng.random(n), "p_compliance": rng.random(n), "risk_level": _objects(["low"] * n),
               "reasons": _objects([["ip_velocity"] if i % 3 == 0 else [] for i in range(n)])}
    batch = LoggedBatch(family="risk", endpoint="score_risk", request_id=f"req{k}", model_name="tradecast-risk",
                        model_version="7", logged_at=datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc),
                        item_index=np.arange(n), inputs=inputs, features=features, outputs=outputs,
                        defaults_used=rng.random(n) < 0.1)
    if n > 1:
        batch.row_request_ids = _objects([f"req{k}-{i}" for i in range(n)])
        batch.item_index = np.zeros(n, dtype=np.int64)
    return batch


def batches_of(total: int, sizes: tuple[int, int], seed: int = 0) -> list[LoggedBatch]:
    """Risk batches of `sizes` orders (inclusive range) until `total` records."""
    rng = np.random.default_rng(seed)
    fields = risk_feature_fields()
    out, count = [], 0
    while count < total:
        n = int(rng.integers(sizes[0], sizes[1] + 1))
        out.append(risk_batch(len(out), n, rng, fields))
        count += n
    return out


def cpu_us_per_record(writers: dict[str, Callable[[list], list[str]]], batches: list[LoggedBatch], path: Path,
                      repeats: int) -> dict[str, tuple[float, float]]:
    """Per writer: median and min CPU µs per record of one flush's work (serialise the batches, append them
    to `path`). The writers take turns within each repeat so that load changes hit them alike."""
    n = sum(len(b.defaults_used) for b in batches)
    samples: dict[str, list[float]] = {name: [] for name in writers}
    for _ in range(repeats):
        for name, lines_of in writers.items():
            start = time.process_time()
            lines = lines_of(batches)
            _append(path, ("\n".join(lines) + "\n").encode("utf-8"), False)
            samples[name].append((time.process_time() - start) / n * 1e6)
            path.unlink()
    return {name: (statistics.median(v), min(v)) for name, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=600, help="records per flush (~1 s of traffic at 600 req/s)")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    shapes = {"single orders (1 per batch)": (1, 1), "coalesced (8-16 per batch)": (8, 16)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "risk.jsonl"
        for label, sizes in shapes.items():
            batches = batches_of(args.records, sizes)
            n = sum(len(b.defaults_used) for b in batches)
            assert record_lines(batches) == legacy_lines(batches)  # same bytes, or the figures mean nothing
            timed = cpu_us_per_record({"before": legacy_lines, "after": record_lines}, batches, path, args.repeats)
            before, after = timed["before"], timed["after"]
            cols = [len(batches[0].inputs), len(batches[0].features), len(batches[0].outputs)]
            print(f"{label}: {len(batches)} batches, {n} records, columns in/f/out {cols}")
            print(f"  before (pandas to_json + loads + dumps): {before[0]:8.1f} µs/record (min {before[1]:.1f})")
            print(f"  after  (serving.prediction_log):         {after[0]:8.1f} µs/record (min {after[1]:.1f})"
                  f"   x{before[0] / after[0]:.1f}")


if __name__ == "__main__":
    main()
