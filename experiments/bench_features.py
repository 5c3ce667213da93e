"""Feature-store benchmark: feature computation, materialization and in-process online lookup latency.

    .venv/bin/python experiments/bench_features.py --scale medium [--home DIR] [--lookups 1000]

Uses $TRADECAST_HOME (or --home); generates the canonical tables at --scale first when the home has none.
Prints: computation time per feature view and in total, apply and materialization time, point-in-time
training-frame time for a sample of examples per service, and online lookup latency (p50 / p99 over
--lookups calls) for one entity and for a batch of 100 entities, per feature service.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd


def _pct(samples: list[float], cpu: list[float]) -> str:
    ms, cpu_ms = np.array(samples) * 1000, np.array(cpu) * 1000
    return (f"p50 {np.percentile(ms, 50):7.2f} ms   p99 {np.percentile(ms, 99):7.2f} ms   "
            f"(CPU p50 {np.percentile(cpu_ms, 50):6.2f} ms; n={len(ms)})")


class Stage:
    """Wall-clock and process CPU seconds of a block (CPU time is less distorted by a busy shared machine)."""

    def __enter__(self) -> "Stage":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def __str__(self) -> str:
        return f"{self.wall:.1f}s wall, {self.cpu:.1f}s CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="medium")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--home", type=Path, default=None, help="state directory (default $TRADECAST_HOME)")
    parser.add_argument("--lookups", type=int, default=1000, help="online lookups per measurement")
    parser.add_argument("--training-rows", type=int, default=50_000, help="examples per service for training_frame")
    args = parser.parse_args()
    if args.home:
        os.environ["TRADECAST_HOME"] = str(args.home)
    warnings.simplefilter("ignore")

    from features.offline import read_table, table_exists
    from features.store import (apply_definitions, compute_features, delay_entities, demand_entities, get_store,
                                join_keys, materialize, online_features, risk_entities, training_frame)
    from tradecast.paths import feature_data_dir, home

    print(f"home: {home()}")
    if not table_exists("orders"):
        from features.generate import generate_to_store, load_data_config

        t0 = time.perf_counter()
        generate_to_store(load_data_config(None), scale=args.scale, seed=args.seed)
        print(f"generated --scale {args.scale} in {time.perf_counter() - t0:.1f}s")
    sizes = {t: len(read_table(t, columns=[c])) for t, c in
             (("daily_sales", "units"), ("shipments", "shipment_id"), ("orders", "order_id"))}
    print("tables: " + ", ".join(f"{t} {n:,} rows" for t, n in sizes.items()))

    print(f"load average (1 min) at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with Stage() as st:
        written = compute_features(progress=print)
    print(f"feature computation: {st} ({sum(written.values()):,} rows)")

    store = get_store()
    with Stage() as st:
        apply_definitions(store)
    print(f"apply: {st}")
    first_run = not any(fv.materialization_intervals for fv in store.list_feature_views())
    with Stage() as st:
        summary = materialize(store, progress=print)
    print(f"materialization: {st} ({'first run: every view from its first row' if first_run else 'incremental'})")

    rng = np.random.default_rng(0)
    daily = read_table("daily_sales")
    origins = pd.Series(np.sort(daily["date"].unique()))[120::14]
    examples = {
        "demand_v1": demand_entities(daily, horizons=(1, 7, 28), origins=origins),
        "delay_v1": delay_entities(read_table("shipments")),
        "risk_v1": risk_entities(read_table("orders")),
    }
    del daily
    for service, ent in examples.items():
        sample = ent.sample(n=min(args.training_rows, len(ent)), random_state=0)
        with Stage() as st:
            tf = training_frame(service, sample, store=store)
        print(f"training_frame {service}: {len(tf):,} examples x {tf.shape[1]} columns in {st}")

    # known entities: the join keys of recent examples
    request = {
        "demand_v1": {"price": 12.0, "discount": 0.1, "live_sessions": 0.0, "is_promotion": 0.0, "target_dow": 2.0},
        "delay_v1": {"promised_days": 9.0, "weight_kg": 1.5, "declared_value": 40.0},
        "risk_v1": {"amount": 55.0, "declared_value": 30.0, "account_age_days": 12.0, "hs_code": "330499",
                    "order_category": "beauty", "item_description": "lipstick", "ip_country": "ID",
                    "card_country": "ID", "shipping_country": "ID"},
    }
    print(f"online lookup latency (in-process, {store.config.online_store.type} online store; "
          f"load average {os.getloadavg()[0]:.1f}):")
    for service, ent in examples.items():
        keys = ent[join_keys(service)].tail(20_000).drop_duplicates().to_dict("records")
        online_features(service, [keys[0]], request_data=request[service], store=store)  # warm caches
        single, single_cpu, batch, batch_cpu, unknown = [], [], [], [], 0
        for i in range(args.lookups):
            entity = keys[int(rng.integers(len(keys)))]
            t0, c0 = time.perf_counter(), time.process_time()
            res = online_features(service, [entity], request_data=request[service], store=store)
            single.append(time.perf_counter() - t0)
            single_cpu.append(time.process_time() - c0)
            unknown += res.defaults_used[0]
        for i in range(args.lookups):
            rows = [keys[int(j)] for j in rng.integers(len(keys), size=100)]
            t0, c0 = time.perf_counter(), time.process_time()
            online_features(service, rows, request_data=request[service], store=store)
            batch.append(time.perf_counter() - t0)
            batch_cpu.append(time.process_time() - c0)
        print(f"  {service:10s} 1 entity:     {_pct(single, single_cpu)}   ({unknown} of {len(single)} used a default)")
        print(f"  {service:10s} 100 entities: {_pct(batch, batch_cpu)}")
    print(f"feature sources: {feature_data_dir()}; materialized views: {len(summary.views)}")


if __name__ == "__main__":
    main()
