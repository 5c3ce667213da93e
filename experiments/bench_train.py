"""Benchmark of `tradecast train`: time per stage (training set, backtest, fit, logging) for each family.

Run on a home that holds data and computed feature sources, e.g. for --scale medium:

    tradecast data generate --scale medium --seed 7
    tradecast features compute && tradecast features apply
    python experiments/bench_train.py [--families demand,delay,risk]

Prints wall-clock and process CPU seconds per stage (CPU = all threads of this process; on a shared machine
the wall clock also counts time spent waiting for a core, so both are shown with the load average), then
each family's backtest metrics with its baseline beside it.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="demand,delay,risk", help="comma-separated families to train")
    args = parser.parse_args()

    from training.cli import KEY_METRICS
    from training.pipeline import format_table, train_family

    families = [f.strip() for f in args.families.split(",") if f.strip()]
    stages = ["training_set", "backtest", "fit", "champion_backtest", "logging"]
    rows = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    load0 = os.getloadavg()
    for family in families:
        started = time.perf_counter()
        result = train_family(family, progress=lambda m, f=family, s=started: print(
            f"  [{f} {time.perf_counter() - s:6.1f}s] {m}", flush=True))
        rows.append((family, result))
        print(f"\n{family}: {result.rows:,} examples, window {result.window}")
        print(format_table(result.metrics, KEY_METRICS[family], list(result.metrics["candidate"].unique())))
        print(f"selected {result.selected}; gate: {result.gate_reason}\n", flush=True)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    load1 = os.getloadavg()

    print("time per stage, seconds: wall / cpu")
    print(f"{'family':<8}" + "".join(f"{s:>22}" for s in stages) + f"{'total':>22}")
    for family, r in rows:
        cells = [f"{r.timings.get(s, 0):9.1f} / {r.cpu_seconds.get(s, 0):7.1f}" for s in stages]
        total = f"{sum(r.timings.values()):9.1f} / {sum(r.cpu_seconds.values()):7.1f}"
        print(f"{family:<8}" + "".join(f"{c:>22}" for c in cells) + f"{total:>22}")
    print(f"all: wall {wall:.1f}s, cpu {cpu:.1f}s (cores: {os.cpu_count()}; load average "
          f"{load0[0]:.1f} at start, {load1[0]:.1f} at end)")


if __name__ == "__main__":
    main()
