"""The pipeline shared by the three families: training set -> backtest -> fit -> log -> register -> gate.

A family module (training.demand / delay / risk) supplies a `Family` object with the family-specific parts;
`train(family, config)` runs the stages, times them, and only touches the champion alias at the very end,
through the gate, so a failure anywhere leaves the current champion as it was.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import pandas as pd

from training.backtest import FitPredict, Fold, metrics_by_fold, run_backtest, window_id
from tradecast.errors import TradecastError

Progress = Callable[[str], None]


@dataclass
class TrainingSet:
    """Point-in-time training examples of one family.

    frame: one row per example (RangeIndex) with feature, request, label and time columns.
    event_time: when the prediction would have been made (forecast origin, shipment creation, order time).
    label_time: when the outcome became known (rows whose label is unknown at a cutoff never train on it).
    """

    frame: pd.DataFrame
    event_time: pd.Series
    label_time: pd.Series
    numeric: list[str]
    categorical: list[str]
    request_columns: list[str]
    store_features: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def input_columns(self) -> list[str]:
        """Columns the packaged model takes: the request fields and the feature service's features (online
        lookup). Derived inputs (calendar, horizon, customs level, ...) are computed from them by the model."""
        return list(dict.fromkeys(c for c in self.request_columns + self.store_features if c in self.frame.columns))


class Family(Protocol):
    """What a family module provides to the shared pipeline."""

    name: str
    model_candidates: tuple[str, ...]  # candidates that may be registered (LightGBM, PyTorch)
    baseline_candidates: tuple[str, ...]

    def build_training_set(self, progress: Progress) -> TrainingSet: ...
    def folds(self, ts: TrainingSet) -> list[Fold]: ...
    def candidates(self, ts: TrainingSet) -> dict[str, FitPredict]: ...
    def score(self, rows: pd.DataFrame) -> dict[str, float]: ...
    def fit_final(self, ts: TrainingSet, candidate: str) -> Any: ...
    def refit_from_model(self, model: Any, ts: TrainingSet) -> FitPredict: ...
    def sanity(self, table: pd.DataFrame, candidate: str) -> dict[str, bool]: ...
    def figures(self, ts: TrainingSet, predictions: pd.DataFrame, model: Any, candidate: str) -> dict[str, Any]: ...
    def breakdown(self, ts: TrainingSet, predictions: pd.DataFrame) -> pd.DataFrame: ...
    def behaviour(self, model: Any, ts: TrainingSet) -> dict[str, bool]: ...


@dataclass
class TrainResult:
    """What one training run produced (also printed by the CLI)."""

    family: str
    run_id: str
    version: str | None
    selected: str
    metrics: pd.DataFrame  # candidate x fold table
    breakdown: pd.DataFrame
    gate_promoted: bool
    gate_reason: str
    champion_before: str | None
    champion_after: str | None
    timings: dict[str, float]
    window: str
    rows: int
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # process CPU time per stage (all threads)


def data_fingerprint(frame: pd.DataFrame) -> str:
    """A short hash of the training frame's contents (columns, dtypes and values)."""
    digest = hashlib.sha256()
    digest.update(",".join(f"{c}:{t}" for c, t in frame.dtypes.astype(str).items()).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def code_version() -> str:
    """git commit of the working tree (with '+dirty' when it has local changes), or 'unknown'."""
    from tradecast.paths import PROJECT_ROOT

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "training", "features"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except Exception:
        return "unknown"


def overall(table: pd.DataFrame, candidate: str) -> dict[str, float]:
    """The overall (all folds) metrics of one candidate."""
    row = table[(table["candidate"] == candidate) & (table["fold"] == "all")]
    if row.empty:
        return {}
    return {k: float(v) for k, v in row.drop(columns=["candidate", "fold"]).iloc[0].items()
            if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)}


def _ranked(table: pd.DataFrame, candidates: tuple[str, ...], metric: str, higher: bool) -> list[str]:
    """Model candidates ordered best first by their overall primary metric (non-finite last)."""
    def key(name: str) -> float:
        value = overall(table, name).get(metric)
        if value is None or not math.isfinite(value):
            return math.inf
        return -value if higher else value
    return sorted(candidates, key=key)


def select_candidate(table: pd.DataFrame, candidates: tuple[str, ...], metric: str, higher: bool) -> str:
    """The model candidate with the best overall primary metric (ties go to the first listed)."""
    best, best_value = candidates[0], None
    for name in candidates:
        value = overall(table, name).get(metric)
        if value is None or not math.isfinite(value):
            continue
        if best_value is None or (value > best_value if higher else value < best_value):
            best, best_value = name, value
    return best


def train(family: Family, config: Any, progress: Progress | None = None) -> TrainResult:
    """Run the whole pipeline for one family and return what happened."""
    import mlflow

    from training import registry

    say = progress or (lambda msg: None)
    metric, higher = registry.PRIMARY_METRIC[family.name]
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    c0 = time.process_time()

    t0 = time.perf_counter()
    say("building the point-in-time training set")
    ts = family.build_training_set(say)
    fingerprint = data_fingerprint(ts.frame)
    timings["training_set"] = time.perf_counter() - t0
    cpu["training_set"], c0 = time.process_time() - c0, time.process_time()
    say(f"training set: {len(ts.frame):,} rows, {len(ts.numeric) + len(ts.categorical)} features "
        f"({timings['training_set']:.1f}s)")

    t0 = time.perf_counter()
    folds = family.folds(ts)
    window = window_id(folds)
    predictions, candidate_seconds = run_backtest(ts.frame, folds, family.candidates(ts), say)
    table = metrics_by_fold(predictions, ts.frame, family.score)
    selected = select_candidate(table, family.model_candidates, metric, higher)
    breakdown = family.breakdown(ts, predictions)
    timings["backtest"] = time.perf_counter() - t0
    cpu["backtest"], c0 = time.process_time() - c0, time.process_time()
    say(f"backtest on {len(folds)} folds ({window}) took {timings['backtest']:.1f}s; selected {selected}")

    t0 = time.perf_counter()
    # best model candidate first; one that breaks a behaviour check (e.g. a promotion lowering the forecast)
    # gives way to the next best, so an unconstrained challenger cannot become champion by accuracy alone
    ranked = [selected] + [c for c in _ranked(table, family.model_candidates, metric, higher) if c != selected]
    for i, selected in enumerate(ranked):
        model = family.fit_final(ts, selected)
        behaviour = family.behaviour(model, ts)
        failed = [k for k, ok in behaviour.items() if not ok]
        if not failed or i == len(ranked) - 1:
            break
        say(f"{selected} fails behaviour check(s) {', '.join(failed)}; trying {ranked[i + 1]}")
    timings["fit"] = time.perf_counter() - t0
    cpu["fit"], c0 = time.process_time() - c0, time.process_time()
    say(f"final {selected} fit on {len(ts.frame):,} rows ({timings['fit']:.1f}s)")

    t0 = time.perf_counter()
    champion_before = registry.champion_version(family.name)
    champion_metrics, champion_note = _champion_on_window(family, ts, folds, window, fingerprint, champion_before, say)
    timings["champion_backtest"] = time.perf_counter() - t0
    cpu["champion_backtest"], c0 = time.process_time() - c0, time.process_time()

    t0 = time.perf_counter()
    candidate_metrics = overall(table, selected)
    sanity = {**family.sanity(table, selected), **behaviour}
    gate = registry.gate_decision(family.name, candidate_metrics, champion_metrics, config.gate.margin, sanity, window)
    reason = gate.reason + (f" ({champion_note})" if champion_note else "")
    registry.ensure_experiment(family.name)
    mlflow.set_experiment(registry.experiment_name(family.name))
    with mlflow.start_run(run_name=f"{family.name}-{selected}") as run:
        mlflow.set_tags({"family": family.name, "estimator": selected, "code_version": code_version(),
                         "data_fingerprint": fingerprint, "backtest_window": window, "gate_reason": reason,
                         "gate_promoted": str(gate.promote)})
        mlflow.log_params({"rows": len(ts.frame), "features": len(ts.numeric) + len(ts.categorical),
                           "folds": len(folds), **{f"data.{k}": v for k, v in ts.meta.items()}})
        mlflow.log_dict(config.model_dump(mode="json"), "config.json")
        _log_metrics(table)
        mlflow.log_metrics({k: v for k, v in candidate_metrics.items() if math.isfinite(v)})
        mlflow.log_metrics({f"seconds.{k}": v for k, v in {**timings, **{f"backtest.{c}": s for c, s in candidate_seconds.items()}}.items()})
        mlflow.log_metrics({f"cpu_seconds.{k}": v for k, v in cpu.items()})
        mlflow.log_text(table.to_csv(index=False), "backtest/metrics_by_fold.csv")
        if not breakdown.empty:
            mlflow.log_text(breakdown.to_csv(index=False), "backtest/metrics_breakdown.csv")
        for name, fig in family.figures(ts, predictions, model, selected).items():
            mlflow.log_figure(fig, f"plots/{name}.png")
            _close(fig)
        example = ts.frame[ts.input_columns].head(5).reset_index(drop=True)
        output = model.predict_frame(example)
        tags = {"estimator": selected, "backtest_window": window, "data_fingerprint": fingerprint,
                "code_version": code_version(), "run_id": run.info.run_id,
                **{f"{registry.METRIC_TAG_PREFIX}{k}": f"{v:.6g}" for k, v in candidate_metrics.items()}}
        version = registry.log_and_register(family.name, model, example, output, tags)
        if gate.promote:
            registry.promote(family.name, version, reason)
        else:
            registry.mark_challenger(family.name, version, reason)
        mlflow.set_tag("registered_version", version)
    timings["logging"] = time.perf_counter() - t0
    cpu["logging"] = time.process_time() - c0
    say(f"logged run {run.info.run_id} and registered version {version} ({timings['logging']:.1f}s)")
    say(("promoted to champion: " if gate.promote else "kept as challenger: ") + reason)
    return TrainResult(family.name, run.info.run_id, version, selected, table, breakdown, gate.promote, reason,
                       champion_before, registry.champion_version(family.name), timings, window, len(ts.frame), cpu)


def _champion_on_window(family: Family, ts: TrainingSet, folds: list[Fold], window: str, fingerprint: str,
                        champion: str | None, say: Progress) -> tuple[dict[str, float] | None, str]:
    """The champion's metrics on this run's backtest window: reused when it was scored on the same window and
    data, otherwise re-estimated by refitting the champion's estimator spec on the same folds."""
    from training import registry

    if champion is None:
        return None, ""
    tags = registry.version_tags(family.name, champion)
    if tags.get("backtest_window") == window and tags.get("data_fingerprint") == fingerprint:
        return registry.version_metrics(family.name, champion), f"champion v{champion} scored on the same window and data"
    say(f"re-scoring champion v{champion} on this run's backtest window")
    try:
        model = registry.load_version(family.name, champion)
        fit_predict = family.refit_from_model(model, ts)
        predictions, _ = run_backtest(ts.frame, folds, {"champion": fit_predict})
        table = metrics_by_fold(predictions, ts.frame, family.score)
    except TradecastError as exc:
        raise TradecastError(f"cannot re-score champion v{champion} of {family.name} on the current data: {exc}; "
                             f"promote by hand with `tradecast models promote` if that is intended") from exc
    return overall(table, "champion"), f"champion v{champion} refitted on the same folds"


def _log_metrics(table: pd.DataFrame) -> None:
    import mlflow

    values: dict[str, float] = {}
    for _, row in table.iterrows():
        prefix = f"{row['candidate']}." + ("" if row["fold"] == "all" else f"fold{row['fold']}.")
        for key, value in row.drop(labels=["candidate", "fold"]).items():
            if isinstance(value, (int, float, np.floating)) and math.isfinite(float(value)):
                values[prefix + key] = float(value)
    mlflow.log_metrics(values)


def _close(fig: Any) -> None:
    try:
        import matplotlib.pyplot as plt

        plt.close(fig)
    except Exception:  # pragma: no cover
        pass


# ------------------------------------------------------------------ shared plots and table
def feature_importance_figure(names: list[str], importances: np.ndarray, top: int = 20):
    """Horizontal bar chart of the largest gain importances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(importances)[::-1][:top]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(order) + 1.2))
    ax.barh([names[i] for i in order][::-1], np.asarray(importances)[order][::-1])
    ax.set_xlabel("gain")
    ax.set_title("feature importance")
    fig.tight_layout()
    return fig


def calibration_figure(labels: np.ndarray, probabilities: dict[str, np.ndarray], bins: int = 10):
    """Reliability curves (observed rate vs mean predicted probability per bin) for several scorers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    for name, p in probabilities.items():
        p = np.asarray(p)
        edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
        idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
        df = pd.DataFrame({"b": idx, "p": p, "y": labels}).groupby("b").mean()
        ax.plot(df["p"], df["y"], marker="o", label=name)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate")
    ax.legend()
    fig.tight_layout()
    return fig


def format_table(table: pd.DataFrame, columns: list[str], candidates: list[str] | None = None) -> str:
    """Overall metrics of each candidate side by side (baselines beside the model), as plain text."""
    rows = table[table["fold"] == "all"].set_index("candidate")
    if candidates:
        rows = rows.loc[[c for c in candidates if c in rows.index]]
    cols = [c for c in columns if c in rows.columns]
    width = max([len(str(i)) for i in rows.index] + [9])
    lines = [" ".join([f"{'candidate':<{width}}"] + [f"{c:>14}" for c in cols])]
    for name, row in rows.iterrows():
        lines.append(" ".join([f"{name:<{width}}"] + [f"{float(row[c]):>14.4f}" for c in cols]))
    return "\n".join(lines)


def behaviour_rows(ts: TrainingSet, n: int = 500, seed: int = 0) -> pd.DataFrame:
    """A seeded sample of training rows (the model's input columns) for behaviour checks."""
    frame = ts.frame
    if len(frame) > n:
        frame = frame.sample(n, random_state=seed)
    return frame[ts.input_columns].reset_index(drop=True)


def make_family(name: str, config: Any) -> Family:
    """The family object of `name` for the shared pipeline."""
    if name == "demand":
        from training.demand import DemandFamily

        return DemandFamily(config)
    if name == "delay":
        from training.delay import DelayFamily

        return DelayFamily(config)
    if name == "risk":
        from training.risk import RiskFamily

        return RiskFamily(config)
    raise TradecastError(f"unknown model family '{name}': choose one of demand, delay, risk")


def train_family(name: str, config_path: str | None = None, progress: Progress | None = None) -> TrainResult:
    """Load configs/<name>.yaml (or `config_path`) and run the family's pipeline."""
    from training.config import load_family_config
    from training.distributed import training_cluster

    config = load_family_config(name, config_path)
    with training_cluster(progress):  # a Dask client when TRADECAST_DASK / DASK_SCHEDULER say so, else nothing
        return train(make_family(name, config), config, progress)
