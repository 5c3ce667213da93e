"""Demand on real weekly data: the Walmart store x department series through ingestion, features and the
demand pipeline, with accuracy (1 - WAPE) beside seasonal naive (same week last year) and a moving average.

    python experiments/walmart_demand.py [--home /tmp/walmart-home]

Walmart has no SKU master, so each store-department series gets a placeholder `skus` row (category `home`,
tier by sales volume: top 10% hit, next 30% potential, rest long tail; launch = first week) and one
placeholder merchant; the demand features need them. Everything else is the product path: `ingest_file`
with configs/datasets/walmart_weekly.yaml (frequency W), `compute_features`, `apply_definitions`, then
`train_family("demand")` -- horizons in weeks (max_horizon_weekly), weekly origins.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT.parent / "shared" / "datasets" / "walmart_weekly_sales" / "train.csv.zip"


def placeholder_master(daily_sales):
    """skus and merchants rows for the store-department series (see the module docstring)."""
    import numpy as np
    import pandas as pd

    volume = daily_sales.groupby("sku_id")["units"].sum().sort_values(ascending=False)
    rank = np.arange(len(volume)) / max(len(volume), 1)
    tier = np.where(rank < 0.1, "hit", np.where(rank < 0.4, "potential", "long_tail"))
    first = daily_sales.groupby("sku_id")["date"].min()
    skus = pd.DataFrame({"sku_id": volume.index, "merchant_id": "walmart", "category": "home", "price": 1.0,
                         "launch_date": first.reindex(volume.index).to_numpy(), "tier": tier, "seasonal": False,
                         "hs_code": "000000"})
    merchants = pd.DataFrame({"merchant_id": ["walmart"], "size_tier": ["brand"],
                              "registered_at": [first.min()], "home_cluster": ["us_retail"],
                              "marketplace": ["walmart"], "credit_grade": ["A"]})
    return skus, merchants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=None, help="state folder to use (default: a new temporary folder)")
    args = parser.parse_args()
    if not SOURCE.exists():
        sys.exit(f"Walmart data not found at {SOURCE}")
    home = Path(args.home or tempfile.mkdtemp(prefix="walmart-home-"))
    os.environ["TRADECAST_HOME"] = str(home)

    from features.ingest import ingest_file
    from features.offline import read_table, write_table
    from features.schema import validate_table
    from features.store import apply_definitions, compute_features, get_store
    from training.cli import KEY_METRICS
    from training.pipeline import format_table, train_family

    t0 = time.perf_counter()
    print(ingest_file(table="daily_sales", source=SOURCE, mapping=ROOT / "configs/datasets/walmart_weekly.yaml")
          .describe())
    skus, merchants = placeholder_master(read_table("daily_sales"))
    for table, frame in (("merchants", merchants), ("skus", skus)):
        coerced, problems = validate_table(table, frame)
        if problems:
            sys.exit(f"{table}: {problems}")
        write_table(table, coerced, frequency="W", source="walmart placeholder master")
    compute_features()
    apply_definitions(get_store())
    print(f"ingest + features: {time.perf_counter() - t0:.1f}s")
    result = train_family("demand", progress=lambda m: print(f"  {m}", flush=True))
    print(f"\nWalmart weekly demand, backtest {result.window} ({result.rows:,} examples, weekly horizons)")
    print(format_table(result.metrics, KEY_METRICS["demand"] + ["n"], list(result.metrics["candidate"].unique())))
    print(f"selected {result.selected}; gate: {result.gate_reason}")


if __name__ == "__main__":
    main()
