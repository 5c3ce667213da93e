"""The gated retrain loop: monitor -> retrain the drifted families -> promotion gate -> MLflow.

`retrain_families` runs the monitor for each family; with `if_drift` only families whose alert reaches
`retrain.min_severity` (configs/monitoring.yaml) are retrained. A retrain refreshes the offline feature sources
from the canonical tables (so it trains on data up to now) and runs the family's training pipeline
(training.pipeline.train), which backtests the new model against the champion on the same window and promotes
it only when the gate says so; otherwise it stays `challenger` and the champion is untouched. The monitor's
JSON summary is attached to the retrain run (`monitoring/drift_summary.json`, tags `retrain.*`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

from monitoring.config import MonitoringConfig, parse_window, severity_rank
from monitoring.monitor import MonitorResult, run_monitor
from tradecast.errors import TradecastError

FAMILY_CLASSES = {"demand": "DemandFamily", "delay": "DelayFamily", "risk": "RiskFamily"}


@dataclass
class RetrainStep:
    """What happened to one family."""

    family: str
    severity: str | None
    action: str  # retrained | skipped | failed
    reason: str
    run_id: str | None = None
    version: str | None = None
    promoted: bool | None = None
    gate_reason: str | None = None
    champion_before: str | None = None
    champion_after: str | None = None

    def line(self) -> str:
        if self.action == "retrained":
            verdict = "PROMOTED" if self.promoted else "NOT promoted (champion kept)"
            return (f"{self.family}: retrained ({self.reason}) -> version {self.version} {verdict}: {self.gate_reason}; "
                    f"champion v{self.champion_before} -> v{self.champion_after}; run {self.run_id}")
        return f"{self.family}: {self.action}: {self.reason}"


@dataclass
class RetrainOutcome:
    monitor_results: list[MonitorResult] = field(default_factory=list)
    steps: list[RetrainStep] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(s.action == "failed" for s in self.steps)

    def lines(self) -> list[str]:
        return [s.line() for s in self.steps]


def refresh_features(progress: Callable[[str], None] | None = None) -> None:
    """Recompute the offline feature sources from the canonical tables as they are now and apply the Feast
    definitions, so the training set reaches the latest data."""
    from features.store import apply_definitions, compute_features

    compute_features(progress=progress)
    apply_definitions()


def family_pipeline(family: str):
    """(family object, its config) of the training pipeline, imported lazily."""
    from training.config import load_family_config

    module = importlib.import_module(f"training.{family}")
    config = load_family_config(family)
    return getattr(module, FAMILY_CLASSES[family])(config), config


# The segment gate pairs both models' errors on the same backtest rows of the alerting segment: it needs this many
# rows, and a one-sided Wilcoxon signed-rank test (the new model's errors smaller) must give p below the alpha.
MIN_SEGMENT_BACKTEST_ROWS = 10
SEGMENT_GATE_ALPHA = 0.05
# family -> (label column of the training frame, point-forecast column of the backtest predictions)
POINT_FORECAST = {"delay": ("transit_days", "p50_days")}


def train_family(family: str, progress: Callable[[str], None] | None = None,
                 segments: list[dict[str, str]] | None = None):
    """Run the family's training pipeline (build set -> backtest -> fit -> log -> register -> gate), then give
    the new version a second hearing against the deployed champion as it is (see `gate_against_frozen_champion`),
    also on the `segments` whose alert started the retrain."""
    from training.pipeline import train

    fam, config = family_pipeline(family)
    result = train(fam, config, progress)
    if not result.gate_promoted and result.version is not None and result.champion_before is not None:
        gate_against_frozen_champion(family, fam, config, result, progress, segments)
    return result


def alerted_segments(result: MonitorResult, lookback: timedelta) -> list[dict[str, str]]:
    """The segments whose performance checks breached in this monitor run or in the family's alerts of the
    `lookback` before it (alerts.jsonl), each once. A lane's alert clears once its baseline holds the disrupted
    deliveries too, but a retrain weeks later must still be judged on that lane."""
    from monitoring.alerts import read_alerts

    found: list[dict[str, str]] = []
    for check in result.summary.get("segments") or []:
        if check.get("status") == "breach" and check.get("segment"):
            found.append(check["segment"])
    end = datetime.fromisoformat(result.summary["window"]["end"])
    for record in read_alerts():
        if record.get("family") != result.family or not record.get("window_end"):
            continue
        if end - lookback <= datetime.fromisoformat(record["window_end"]) <= end:
            found += [r["segment"] for r in record.get("reasons", []) if r.get("segment")]
    return [seg for i, seg in enumerate(found) if seg not in found[:i]]


def segment_mask(frame, segment: dict[str, str]):
    """Rows of a training frame in a monitor segment: log columns `in_<x>` are the frame's `<x>`; `region` is
    derived as the monitor derives it (`add_segment_columns`)."""
    import numpy as np

    from monitoring.performance import add_segment_columns

    frame = add_segment_columns(frame)
    mask = np.ones(len(frame), dtype=bool)
    for col, value in segment.items():
        name = col[3:] if col.startswith("in_") and col not in frame.columns else col
        if name not in frame.columns:
            raise TradecastError(f"segment column '{col}': not in the training set")
        mask &= (frame[name].astype(str) == value).to_numpy()
    return mask


def segment_gate(family: str, predictions, frame, score, selected: str, segments: list[dict[str, str]],
                 margin: float, sanity: dict[str, bool], window: str, overall_table) -> tuple[bool, str]:
    """After a segment alert: promote when the new model beats the frozen champion by `margin` on every alerting
    segment's backtest rows (gate_decision) with paired errors that say so (Wilcoxon, see SEGMENT_GATE_ALPHA: a
    segment holds a few dozen rows) and is no worse overall (a gain >= 0 through the same gate_decision)."""
    from scipy import stats

    from training import registry
    from training.backtest import metrics_by_fold
    from training.pipeline import overall

    overall_gate = registry.gate_decision(family, overall(overall_table, selected),
                                          overall(overall_table, "champion_frozen"), 0.0, sanity, window)
    words = [f"overall: {overall_gate.reason}"]
    ok = overall_gate.promote
    if family not in POINT_FORECAST:
        return False, f"no segment gate for {family} (no point forecast to pair)"
    label, forecast = POINT_FORECAST[family]
    for segment in segments:
        name = "/".join(segment.values())
        rows = frame.index[segment_mask(frame, segment)]
        part = predictions.loc[predictions.index.isin(rows)]
        new = part.loc[part["candidate"] == selected, forecast]
        old = part.loc[part["candidate"] == "champion_frozen", forecast].reindex(new.index)
        truth = frame.loc[new.index, label]
        paired = truth.notna() & old.notna() & new.notna()
        n_rows = int(paired.sum())
        if n_rows < MIN_SEGMENT_BACKTEST_ROWS:
            return False, f"segment {name}: {n_rows} paired backtest row(s) (need {MIN_SEGMENT_BACKTEST_ROWS})"
        gain = (truth - old).abs()[paired] - (truth - new).abs()[paired]
        p_value = float(stats.wilcoxon(gain, alternative="greater").pvalue) if (gain != 0).any() else 1.0
        table = metrics_by_fold(part, frame, score)
        gate = registry.gate_decision(family, overall(table, selected), overall(table, "champion_frozen"), margin,
                                      sanity, window)
        passed = gate.promote and p_value < SEGMENT_GATE_ALPHA
        words.insert(0, f"segment {name} ({n_rows} rows): {gate.reason}; paired Wilcoxon p={p_value:.2g} "
                        f"(need < {SEGMENT_GATE_ALPHA})")
        ok = ok and passed
    return ok, "; ".join(words)


def gate_against_frozen_champion(family: str, fam, config, result, progress=None,
                                 segments: list[dict[str, str]] | None = None) -> None:
    """After drift, the question is whether the new version beats the champion *as deployed* (trained on the
    old data) on the recent backtest folds, not whether the same recipe refitted does. The frozen champion
    predicts the folds whose cutoff is after its own training data ended (out of sample for both); both
    metrics go through training's gate (`registry.gate_decision`, same margin and sanity checks). When the alert
    named segments (a lane disruption is a few % of shipments, too few to move the overall metric by the margin),
    the new version is also promoted if it wins on those segments and is no worse overall (`segment_gate`).
    Updates `result` in place when it promotes; otherwise the champion stays and nothing changes."""
    import math

    from training import registry
    from training.backtest import metrics_by_fold, run_backtest, window_id
    from training.pipeline import overall

    say = progress or (lambda msg: None)
    champion = result.champion_before
    client = registry.setup_mlflow()
    mv = client.get_model_version(registry.registered_name(family), champion)
    try:
        trained_until = client.get_run(mv.run_id).data.params.get("data.last_day") if mv.run_id else None
    except Exception:
        trained_until = None
    if not trained_until:
        say(f"champion v{champion}: training end unknown; no frozen-champion comparison")
        return
    ts = fam.build_training_set(say)
    folds = [f for f in fam.folds(ts) if f.cutoff > pd_timestamp(trained_until)]
    if not folds:
        say(f"champion v{champion} was trained on data up to {trained_until}: no later backtest fold to compare on")
        return
    frozen = registry.load_version(family, champion)
    selected = result.selected
    candidates = {"champion_frozen": lambda train, test: frozen.predict_frame(test).reset_index(drop=True),
                  **{k: v for k, v in fam.candidates(ts).items() if k == selected}}
    predictions, _ = run_backtest(ts.frame, folds, candidates, say)
    table = metrics_by_fold(predictions, ts.frame, fam.score)
    window = window_id(folds)
    sanity = {k: v for k, v in fam.sanity(result.metrics, selected).items()}
    gate = registry.gate_decision(family, overall(table, selected), overall(table, "champion_frozen"),
                                  config.gate.margin, sanity, window)
    metric = registry.PRIMARY_METRIC[family][0]
    cand, champ = overall(table, selected).get(metric), overall(table, "champion_frozen").get(metric)
    say(f"frozen champion v{champion} vs new v{result.version} on folds after {trained_until} ({window}): "
        f"{metric} {champ if champ is None or not math.isfinite(champ) else round(champ, 4)} vs "
        f"{cand if cand is None or not math.isfinite(cand) else round(cand, 4)}")
    reason = f"after drift, against the deployed champion v{champion} without refit: {gate.reason}"
    promote = gate.promote
    if not promote and segments:
        promote, words = segment_gate(family, predictions, ts.frame, fam.score, selected, segments,
                                      config.gate.margin, sanity, window, table)
        reason = f"{reason}; on the alerting segment(s): {'PROMOTED' if promote else 'not promoted'}: {words}"
        say(reason)
    client.set_tag(result.run_id, "retrain.frozen_champion_gate", reason[:4000])
    if promote:
        registry.promote(family, result.version, reason)
        result.gate_promoted = True
        result.gate_reason = reason
        result.champion_after = registry.champion_version(family)
    else:
        registry.set_version_tags(family, result.version, {"frozen_champion_gate": reason})
        result.gate_reason = f"{result.gate_reason}; {reason}"


def pd_timestamp(text: str):
    import pandas as pd

    return pd.Timestamp(text) + pd.Timedelta(days=1)  # the whole last day is training data


def log_retrain_context(run_id: str, result: MonitorResult, reason: str) -> None:
    """Attach the monitor's summary and the trigger to the retrain run."""
    from training.registry import setup_mlflow

    client = setup_mlflow()
    client.log_dict(run_id, result.summary, "monitoring/drift_summary.json")
    drift = result.summary.get("drift") or {}
    tags = {"retrain.trigger": reason, "retrain.severity": result.severity or "none",
            "retrain.window": f"{result.summary['window']['start']}/{result.summary['window']['end']}",
            "retrain.drifted_features": ",".join(drift.get("drifted_features", []))[:4000] or "-",
            "retrain.report": result.summary["report"]["html"]}
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    for key in ("share_drifted_features", "n_drifted_features"):
        if key in drift:
            client.log_metric(run_id, f"retrain.{key}", float(drift[key]))
    perf = result.summary.get("performance") or {}
    if perf.get("window_value") is not None:
        client.log_metric(run_id, f"retrain.window_{perf['metric']}", float(perf["window_value"]))


def retrain_families(families: list[str], cfg: MonitoringConfig, if_drift: bool, until: datetime | None = None,
                     window: str | None = None, train_fn: Callable[..., Any] | None = None,
                     refresh: Callable[..., None] | None = refresh_features,
                     progress: Callable[[str], None] | None = None) -> RetrainOutcome:
    """Monitor each family and retrain those that need it (all of them without `if_drift`)."""
    say = progress or (lambda msg: None)
    outcome = RetrainOutcome()
    todo: list[tuple[str, MonitorResult, str]] = []
    for family in families:
        result = run_monitor(family, cfg, until=until, window=window)
        outcome.monitor_results.append(result)
        if if_drift and severity_rank(result.severity) < severity_rank(cfg.retrain.min_severity):
            why = "no alert" if result.severity is None else \
                f"alert {result.severity} is below retrain.min_severity={cfg.retrain.min_severity}"
            outcome.steps.append(RetrainStep(family, result.severity, "skipped", why))
            continue
        reason = (f"{result.severity} alert: " + "; ".join(r["message"] for r in result.summary["alert"]["reasons"])
                  if result.severity else "retrain requested")
        todo.append((family, result, reason))
    if todo and refresh is not None:
        say("refreshing feature sources from the canonical tables")
        refresh(say)
    for family, result, reason in todo:
        say(f"retraining {family}: {reason}")
        try:
            trained = train_fn(family, say) if train_fn else \
                train_family(family, say, alerted_segments(result, parse_window(cfg.retrain.segment_lookback)))
        except TradecastError as exc:
            outcome.steps.append(RetrainStep(family, result.severity, "failed",
                                             f"training failed, champion untouched: {exc}"))
            continue
        log_retrain_context(trained.run_id, result, reason)
        outcome.steps.append(RetrainStep(
            family, result.severity, "retrained", reason[:300], run_id=trained.run_id, version=trained.version,
            promoted=trained.gate_promoted, gate_reason=trained.gate_reason,
            champion_before=trained.champion_before, champion_after=trained.champion_after))
    return outcome
