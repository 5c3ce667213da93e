"""MLflow tracking, the model registry and the promotion gate.

Default tracking is a SQLite database and an artifact folder under `mlflow_dir()` ($TRADECAST_HOME/mlflow),
created on first use; `MLFLOW_TRACKING_URI` points everything at a shared server instead. One experiment per
family (`tradecast-<family>`), registered models `tradecast-demand|delay|risk`, aliases `champion` and
`challenger`. Functions serving calls: `champion_version(family)`, `load_champion(family)`,
`load_version(family, version)`, `download_version(family, version, dest)`, `load_model_from_path(path)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tradecast.errors import TradecastError
from tradecast.paths import ensure_dir, mlflow_dir

CHAMPION = "champion"
CHALLENGER = "challenger"
METRIC_TAG_PREFIX = "metric."

# primary metric of each family and whether higher is better
PRIMARY_METRIC: dict[str, tuple[str, bool]] = {
    "demand": ("accuracy", True),
    "delay": ("mae", False),
    "risk": ("fraud_recall_at_fa", True),
}


def registered_name(family: str) -> str:
    """Registered model name of a family, e.g. 'tradecast-demand'."""
    if family not in PRIMARY_METRIC:
        raise TradecastError(f"unknown model family '{family}': choose one of {', '.join(PRIMARY_METRIC)}")
    return f"tradecast-{family}"


def experiment_name(family: str) -> str:
    return f"tradecast-{family}"


def using_default_backend() -> bool:
    return not os.environ.get("MLFLOW_TRACKING_URI")


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else sqlite:///<mlflow_dir()>/mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlflow_dir() / 'mlflow.db'}"


def setup_mlflow():
    """Point MLflow at the project's tracking server (creating the local folders on first use); returns a client."""
    import mlflow
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network calls from a laptop install
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_PRINT_MODEL_URLS_ON_CREATION", "false")
    if using_default_backend():
        ensure_dir(mlflow_dir() / "artifacts")
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    except Exception as exc:  # pragma: no cover - depends on the server
        raise TradecastError(f"cannot reach the MLflow tracking server at {uri}: {exc}") from exc


def ensure_experiment(family: str) -> str:
    """Id of the family's experiment, created on first use (artifacts under mlflow_dir()/artifacts/<family>)."""
    client = setup_mlflow()
    name = experiment_name(family)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = (mlflow_dir() / "artifacts" / family).resolve().as_uri() if using_default_backend() else None
    if location is None and os.environ.get("TRADECAST_MLFLOW_ARTIFACT_ROOT"):
        location = shared_artifact_location(os.environ["TRADECAST_MLFLOW_ARTIFACT_ROOT"], family)
    return client.create_experiment(name, artifact_location=location)


def shared_artifact_location(root: str, family: str) -> str:
    """<root>/<family> for $TRADECAST_MLFLOW_ARTIFACT_ROOT (the `shared` profile): a URI (s3://, gs://, ...) as
    given, a plain path as a file:// URI (a mount every training and serving machine sees)."""
    if "://" in root:
        return f"{root.rstrip('/')}/{family}"
    return (Path(root).expanduser().resolve() / family).as_uri()


def _version_by_alias(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def champion_version(family: str) -> str | None:
    """Version number (as a string) of the family's champion, or None when there is none."""
    mv = _version_by_alias(setup_mlflow(), registered_name(family), CHAMPION)
    return str(mv.version) if mv else None


def challenger_version(family: str) -> str | None:
    """Version number of the family's challenger, or None."""
    mv = _version_by_alias(setup_mlflow(), registered_name(family), CHALLENGER)
    return str(mv.version) if mv else None


def _model_version(family: str, version: str):
    from mlflow.exceptions import MlflowException

    name = registered_name(family)
    try:
        return setup_mlflow().get_model_version(name, str(version))
    except MlflowException:
        raise TradecastError(f"{name} has no version {version} (see `tradecast models list`)") from None


def version_metrics(family: str, version: str) -> dict[str, float]:
    """The backtest metrics recorded on a model version (tags 'metric.<name>')."""
    return _metrics_from_tags(_model_version(family, version).tags)


def version_tags(family: str, version: str) -> dict[str, str]:
    """All tags of a model version (backtest window, data fingerprint, run id, gate reason, ...)."""
    return dict(_model_version(family, version).tags)


def _metrics_from_tags(tags: dict[str, str]) -> dict[str, float]:
    out = {}
    for key, value in (tags or {}).items():
        if key.startswith(METRIC_TAG_PREFIX):
            try:
                out[key[len(METRIC_TAG_PREFIX):]] = float(value)
            except ValueError:
                pass
    return out


def load_version(family: str, version: str):
    """Load one registered version as the TradecastModel object (call `.predict_frame(df)` on it)."""
    import mlflow

    setup_mlflow()
    uri = f"models:/{registered_name(family)}/{version}"
    try:
        return mlflow.pyfunc.load_model(uri).unwrap_python_model()
    except Exception as exc:
        raise TradecastError(f"cannot load {uri}: {exc}") from exc


def load_champion(family: str):
    """(model, version) of the family's champion; model is a TradecastModel with `.predict_frame(df)`."""
    version = champion_version(family)
    if version is None:
        raise TradecastError(f"no champion for '{family}' yet: run `tradecast train {family}` first")
    return load_version(family, version), version


def download_version(family: str, version: str, dest: Path) -> Path:
    """Copy a registered version's model folder to `dest` (a local cache serving can start from)."""
    import mlflow

    setup_mlflow()
    ensure_dir(Path(dest))
    return Path(mlflow.artifacts.download_artifacts(f"models:/{registered_name(family)}/{version}",
                                                   dst_path=str(dest)))


def load_model_from_path(path: Path):
    """Load a model folder written by `download_version` without contacting the registry."""
    import mlflow

    return mlflow.pyfunc.load_model(str(path)).unwrap_python_model()


# ------------------------------------------------------------------ gate
@dataclass(frozen=True)
class GateResult:
    """The gate's decision and the reason, always logged."""

    promote: bool
    reason: str
    candidate_value: float | None = None
    champion_value: float | None = None
    checks: dict[str, bool] = field(default_factory=dict)


def gate_decision(family: str, candidate: dict[str, float], champion: dict[str, float] | None, margin: float,
                  sanity: dict[str, bool], window: str) -> GateResult:
    """Promote only if every sanity check passes and the candidate beats the champion by `margin` (relative)
    on the family's primary metric, both measured on the same backtest `window`."""
    import math

    metric, higher = PRIMARY_METRIC[family]
    failed = [name for name, ok in sanity.items() if not ok]
    cand = candidate.get(metric)
    if cand is None or not math.isfinite(cand):
        return GateResult(False, f"candidate has no finite {metric}", cand, None, sanity)
    if failed:
        return GateResult(False, f"sanity check(s) failed: {', '.join(failed)}", cand, None, sanity)
    if champion is None:
        return GateResult(True, f"no champion yet; {metric}={cand:.4f} on window {window}, sanity checks passed",
                          cand, None, sanity)
    champ = champion.get(metric)
    if champ is None or not math.isfinite(champ):
        return GateResult(True, f"champion has no finite {metric} on window {window}; candidate {metric}={cand:.4f}",
                          cand, champ, sanity)
    scale = max(abs(champ), 1e-9)
    gain = (cand - champ) / scale if higher else (champ - cand) / scale
    direction = "higher" if higher else "lower"
    if gain >= margin:
        return GateResult(True, f"{metric} {cand:.4f} vs champion {champ:.4f} on window {window}: "
                                f"{gain:+.2%} better (margin {margin:.2%}, {direction} is better)", cand, champ, sanity)
    return GateResult(False, f"{metric} {cand:.4f} vs champion {champ:.4f} on window {window}: {gain:+.2%} "
                             f"does not reach the margin {margin:.2%} ({direction} is better); champion kept",
                      cand, champ, sanity)


def set_version_tags(family: str, version: str, tags: dict[str, Any]) -> None:
    client = setup_mlflow()
    for key, value in tags.items():
        client.set_model_version_tag(registered_name(family), str(version), key, str(value))


def promote(family: str, version: str, reason: str) -> str | None:
    """Make `version` the champion; returns the version it replaced (None if none). Logs the reason as tags."""
    import time

    client = setup_mlflow()
    name = registered_name(family)
    _model_version(family, version)
    previous = _version_by_alias(client, name, CHAMPION)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    client.set_registered_model_alias(name, CHAMPION, str(version))
    set_version_tags(family, version, {"promoted_at": stamp, "promotion_reason": reason})
    challenger = _version_by_alias(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)
    if previous is not None and str(previous.version) != str(version):
        set_version_tags(family, previous.version, {"replaced_at": stamp, "replaced_by": version})
        return str(previous.version)
    return None


def mark_challenger(family: str, version: str, reason: str) -> None:
    """Point the `challenger` alias at `version` and record why it was not promoted."""
    client = setup_mlflow()
    client.set_registered_model_alias(registered_name(family), CHALLENGER, str(version))
    set_version_tags(family, version, {"gate_reason": reason})


def family_summary(family: str) -> dict[str, Any]:
    """Champion and challenger of a family with their key metrics (for `tradecast models list`)."""
    client = setup_mlflow()
    name = registered_name(family)
    out: dict[str, Any] = {"family": family, "model": name}
    for alias in (CHAMPION, CHALLENGER):
        mv = _version_by_alias(client, name, alias)
        out[alias] = None if mv is None else {
            "version": str(mv.version),
            "metrics": _metrics_from_tags(mv.tags),
            "window": mv.tags.get("backtest_window", ""),
            "estimator": mv.tags.get("estimator", ""),
            "created": mv.creation_timestamp,
            "reason": mv.tags.get("promotion_reason") or mv.tags.get("gate_reason", ""),
        }
    return out


def list_versions(family: str) -> list[dict[str, Any]]:
    """Every registered version of a family (newest first) with aliases and metrics."""
    client = setup_mlflow()
    name = registered_name(family)
    versions = client.search_model_versions(f"name='{name}'")
    rows = []
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        rows.append({"version": str(mv.version), "aliases": list(mv.aliases or []),
                     "metrics": _metrics_from_tags(mv.tags), "estimator": mv.tags.get("estimator", "")})
    return rows


def log_and_register(family: str, model: Any, input_example, output_example, tags: dict[str, Any]) -> str:
    """Log `model` (a TradecastModel) to the active run as a pyfunc with signature and input example, register it
    under the family's name with `tags` on the version, and return the new version number."""
    import mlflow
    from mlflow.models import infer_signature

    from training.pyfunc import pip_requirements

    signature = infer_signature(input_example, output_example)
    info = mlflow.pyfunc.log_model(name="model", python_model=model, signature=signature,
                                   input_example=input_example, pip_requirements=pip_requirements())
    mv = mlflow.register_model(info.model_uri, registered_name(family),
                               tags={k: str(v) for k, v in tags.items()})
    return str(mv.version)
