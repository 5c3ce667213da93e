"""Drift as a pure function of (reference, current): Evidently stat tests per column, named metrics out.

Columns follow the prediction-log naming: `f_<feature>` (features the model used), `in_<field>` (request
fields), `out_<output>` (model outputs). Input drift is tested on the features and request fields both frames
hold; prediction drift on the configured outputs. Each column gets the test suited to its type (configs:
`num_method` for numbers, `cat_method` for categories and flags, per-column overrides). Nothing here reads
or writes files; report.py turns the result into HTML/JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from monitoring.config import FamilyMonitorConfig, parse_window

FEATURE_PREFIXES = ("f_", "in_")
PREDICTION_PREFIX = "out_"
# Request fields that identify an entity or a moment rather than describe it: never drift-tested.
ID_LIKE_SUFFIXES = ("_id", "_at", "_time", "_date")
# Evidently stat tests whose score is a p-value (drift when below the threshold); the others are distances.
P_VALUE_METHODS = {"ks", "chisquare", "z", "t_test", "fisher_exact", "cramer_von_mises", "anderson", "mannw",
                   "g_test", "es", "empirical_mmd"}
ID_LIKE_NAMES = {"in_ip", "in_date", "in_timestamp", "in_hs_code", "in_item_description", "f_hs_code"}


@dataclass(frozen=True)
class ColumnDrift:
    """The drift test of one column."""

    column: str
    role: str  # "feature" or "prediction"
    kind: str  # "numerical" or "categorical"
    method: str  # Evidently's name of the stat test actually used
    score_kind: str  # "p_value" (drift when below threshold) or "distance" (drift when at/above threshold)
    threshold: float
    score: float
    drifted: bool
    n_reference: int
    n_current: int

    @property
    def severity_key(self) -> float:
        """Sort key: most drifted first (smallest p-value / largest distance relative to its threshold)."""
        if self.score_kind == "p_value":
            return -np.log10(max(self.score, 1e-300)) / -np.log10(max(self.threshold, 1e-300))
        return self.score / self.threshold if self.threshold else self.score


@dataclass(frozen=True)
class DriftResult:
    """Named drift metrics of one (reference, current) comparison."""

    features: tuple[ColumnDrift, ...]
    predictions: tuple[ColumnDrift, ...]
    drift_share_threshold: float
    n_reference: int
    n_current: int
    skipped: dict[str, str] = field(default_factory=dict)  # column -> why it was not tested

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_drifted(self) -> int:
        return sum(c.drifted for c in self.features)

    @property
    def share_drifted(self) -> float:
        """Share of tested features that drifted (0 when nothing could be tested)."""
        return self.n_drifted / self.n_features if self.n_features else 0.0

    @property
    def dataset_drift(self) -> bool:
        """Input drift: the share of drifted features reached the family's `drift_share`."""
        return self.n_features > 0 and self.share_drifted >= self.drift_share_threshold

    @property
    def prediction_drift(self) -> bool:
        return any(c.drifted for c in self.predictions)

    def drifted_features(self) -> list[ColumnDrift]:
        """Drifted features, most drifted first."""
        return sorted((c for c in self.features if c.drifted), key=lambda c: -c.severity_key)

    def ordered_columns(self) -> list[ColumnDrift]:
        """Every tested column, drifted ones first (most drifted first), then predictions, then the rest."""
        rest = sorted((c for c in self.features if not c.drifted), key=lambda c: -c.severity_key)
        preds = sorted(self.predictions, key=lambda c: (not c.drifted, -c.severity_key))
        return self.drifted_features() + preds + rest

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (drifted features first)."""
        return {
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "n_features": self.n_features,
            "n_drifted_features": self.n_drifted,
            "share_drifted_features": round(self.share_drifted, 4),
            "drift_share_threshold": self.drift_share_threshold,
            "dataset_drift": self.dataset_drift,
            "prediction_drift": self.prediction_drift,
            "drifted_features": [c.column for c in self.drifted_features()],
            "features": [asdict(c) for c in sorted(self.features, key=lambda c: (not c.drifted, -c.severity_key))],
            "predictions": [asdict(c) for c in self.predictions],
            "skipped": dict(self.skipped),
        }


def classify_columns(reference: pd.DataFrame, current: pd.DataFrame, candidates: Sequence[str],
                     max_categories: int) -> tuple[dict[str, str], dict[str, str]]:
    """Split candidate columns into {column: "numerical"|"categorical"} and {column: reason skipped}."""
    kinds: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for col in candidates:
        ref, cur = reference[col], current[col]
        if ref.notna().sum() < 2 or cur.notna().sum() < 2:
            skipped[col] = "fewer than 2 values in reference or current"
            continue
        if _is_nested(ref) or _is_nested(cur):
            skipped[col] = "lists or mappings are not tested"
            continue
        if pd.api.types.is_datetime64_any_dtype(ref) or pd.api.types.is_datetime64_any_dtype(cur):
            skipped[col] = "timestamps are not tested"
            continue
        ref_bool, cur_bool = pd.api.types.is_bool_dtype(ref), pd.api.types.is_bool_dtype(cur)
        ref_num = pd.api.types.is_numeric_dtype(ref) and not ref_bool
        cur_num = pd.api.types.is_numeric_dtype(cur) and not cur_bool
        if ref_num and cur_num:
            kinds[col] = "numerical"
        elif ref_num != cur_num and not (ref_bool or cur_bool):
            skipped[col] = f"type differs: reference {ref.dtype}, current {cur.dtype}"
        else:
            n_distinct = pd.concat([ref.dropna().astype(str), cur.dropna().astype(str)]).nunique()
            if n_distinct > max_categories:
                skipped[col] = f"{n_distinct} distinct values (an identifier?), above max_categories={max_categories}"
            else:
                kinds[col] = "categorical"
    return kinds, skipped


def feature_candidates(reference: pd.DataFrame, current: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Feature and request-field columns present in both frames, minus ids, timestamps and excluded ones.

    A request field `in_x` is skipped when the feature `f_x` is also there, so a field is not counted twice.
    """
    shared = [c for c in current.columns if c in reference.columns and c.startswith(FEATURE_PREFIXES)]
    features = {c[2:] for c in shared if c.startswith("f_")}
    out = []
    for col in shared:
        if col in exclude or col in ID_LIKE_NAMES or col.endswith(ID_LIKE_SUFFIXES):
            continue
        if col.startswith("in_") and col[3:] in features:
            continue
        out.append(col)
    return out


def compute_drift(reference: pd.DataFrame, current: pd.DataFrame, settings: FamilyMonitorConfig,
                  feature_columns: Sequence[str] | None = None,
                  prediction_columns: Sequence[str] | None = None,
                  time_column: str | None = None, block: pd.Timedelta | None = None) -> DriftResult:
    """Test every feature and prediction column of `current` against `reference` with Evidently.

    `feature_columns` defaults to `feature_candidates(...)`; `prediction_columns` to the configured outputs
    (`out_<name>`) present in both frames. With `time_column` and `block` (the window's length), each distance
    threshold is also raised to the reference's own week-to-week variation (`reference_noise_floors`); with
    `time_column`, a distance at or above its threshold must also pass a permutation test of whole time units
    (`unit_permutation_threshold`: rows of one day are not independent).
    Returns per-column method, threshold, score and drifted flag, the share of drifted features and whether the
    outputs drifted. Pure: same frames in, same result out.
    """
    if feature_columns is None:
        feature_columns = feature_candidates(reference, current, settings.exclude_columns)
    if prediction_columns is None:
        prediction_columns = [f"{PREDICTION_PREFIX}{p}" for p in settings.prediction_columns]
    missing_pred = {c: "not in both reference and current" for c in prediction_columns
                    if c not in reference.columns or c not in current.columns}
    prediction_columns = [c for c in prediction_columns if c not in missing_pred]
    feat_kinds, skipped = classify_columns(reference, current, feature_columns, settings.max_categories)
    pred_kinds, pred_skipped = classify_columns(reference, current, prediction_columns, 10**6)
    skipped.update(missing_pred)
    skipped.update(pred_skipped)
    kinds = {**feat_kinds, **pred_kinds}
    floors = reference_noise_floors(reference, kinds, settings, time_column, block) \
        if kinds and time_column is not None and block is not None else {}
    tested = run_column_tests(reference, current, kinds, settings, floors) if kinds else {}
    if time_column is not None:
        tested = apply_permutation_floors(reference, current, tested, settings, time_column)
    features = tuple(_column(tested[c], "feature", reference, current) for c in feat_kinds)
    predictions = tuple(_column(tested[c], "prediction", reference, current) for c in pred_kinds)
    return DriftResult(features=features, predictions=predictions, drift_share_threshold=settings.drift_share,
                       n_reference=len(reference), n_current=len(current), skipped=skipped)


def column_method(column: str, kind: str, settings: FamilyMonitorConfig) -> tuple[str | None, float | None]:
    """The (method, threshold) configured for a column; (None, None) lets Evidently choose by sample size."""
    if column in settings.per_column:
        test = settings.per_column[column]
        return test.method, test.threshold
    if kind == "numerical":
        return settings.num_method, settings.num_threshold
    return settings.cat_method, settings.cat_threshold


def evidently_frames(reference: pd.DataFrame, current: pd.DataFrame, kinds: dict[str, str]):
    """Evidently Datasets of the tested columns (categories as strings, numbers as floats)."""
    from evidently import DataDefinition, Dataset

    def prepare(frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=range(len(frame)))
        for col, kind in kinds.items():
            values = frame[col].reset_index(drop=True)
            if kind == "numerical":
                out[col] = pd.to_numeric(values, errors="coerce").astype("float64")
            else:
                out[col] = values.astype("object").where(values.notna(), None).map(
                    lambda v: None if v is None else str(v))
        return out

    definition = DataDefinition(
        numerical_columns=[c for c, k in kinds.items() if k == "numerical"],
        categorical_columns=[c for c, k in kinds.items() if k == "categorical"],
    )
    return (Dataset.from_pandas(prepare(reference), data_definition=definition),
            Dataset.from_pandas(prepare(current), data_definition=definition))


def effective_threshold(method: str | None, threshold: float | None, n_current: int, noise_factor: float) -> float | None:
    """Distance thresholds rise to `noise_factor / sqrt(n_current)` on small windows; p-value ones stay.

    Two samples of the same distribution are a distance of about 1-2.5/sqrt(n) apart (Wasserstein normed,
    Jensen-Shannon over up to ~20 categories), so a fixed 0.1 would alert on noise for windows under ~1000 rows.
    """
    if method is None or threshold is None or method in P_VALUE_METHODS or n_current <= 0:
        return threshold
    return max(threshold, noise_factor / np.sqrt(n_current))


def reference_blocks(times: pd.Series, block: pd.Timedelta, step: pd.Timedelta, min_rows: int) -> list[np.ndarray]:
    """Row masks of the window-long blocks of a time-stamped reference, one starting every `step` (overlapping),
    each with at least `min_rows` rows inside and outside it. None when the reference spans less than two blocks."""
    times = pd.to_datetime(times, errors="coerce")
    if times.notna().sum() < 2 or block <= pd.Timedelta(0) or step <= pd.Timedelta(0):
        return []
    first, end = times.min(), times.max() + pd.Timedelta(microseconds=1)
    if end - first < 2 * block:
        return []
    values = times.to_numpy()
    masks = []
    start = end - block
    while start >= first:
        mask = (values >= np.datetime64(start)) & (values < np.datetime64(start + block))
        if min_rows <= mask.sum() <= len(times) - min_rows:
            masks.append(mask)
        start -= step
    return masks if len(masks) >= 2 else []


def reference_noise_floors(reference: pd.DataFrame, kinds: dict[str, str], settings: FamilyMonitorConfig,
                           time_column: str, block: pd.Timedelta) -> dict[str, float]:
    """Per distance-tested column: `block_noise_factor` x the root-mean-square distance between a window-long block
    of the reference and the rest of it (same test), over blocks starting every `block_step` (overlapping).

    Rolling lane/carrier statistics take one value per entity and day and move slowly, so a window holds far fewer
    independent values than rows and `noise_factor/sqrt(n)` understates how far a calm week sits from the weeks
    before. Each block-vs-rest distance is a draw of that calm-week distance; their RMS is its scale, and the floor
    is k times it, k = 3 like the sampling floor. (The largest of the ~4 disjoint blocks of a 28-day reference was
    about the 80th percentile of that distance: every column crossed it in about one calm run in seven.)
    Needs a reference spanning two blocks of `min_block_rows`; otherwise (or without the time column) no floors.
    """
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    factor = settings.block_noise_factor
    if not factor or time_column not in reference.columns:
        return {}
    step = parse_window(settings.block_step)
    masks = reference_blocks(reference[time_column].reset_index(drop=True), block, step, settings.min_block_rows)
    if not masks:
        return {}
    floors: dict[str, float] = {}
    for col, kind in kinds.items():
        method, threshold = column_method(col, kind, settings)
        if method is None or method in P_VALUE_METHODS:
            continue
        ctype = ColumnType.Numerical if kind == "numerical" else ColumnType.Categorical
        values = reference[col].reset_index(drop=True)
        values = pd.to_numeric(values, errors="coerce").astype("float64") if kind == "numerical" else \
            values.astype("object").where(values.notna(), None).map(lambda v: None if v is None else str(v))
        scores = []
        for mask in masks:
            rest, part = values[~mask].dropna(), values[mask].dropna()
            if len(rest) < 2 or len(part) < 2:
                continue
            test = get_stattest(rest, part, ctype, method)
            scores.append(float(test(rest, part, ctype, threshold).drift_score))
        if scores:
            floors[col] = factor * float(np.sqrt(np.mean(np.square(scores))))
    return floors


def time_units(times: pd.Series, unit: pd.Timedelta) -> np.ndarray:
    """Integer unit of each row: whole `unit`s counted from the frame's first row (-1 where the time is missing)."""
    times = pd.to_datetime(times, errors="coerce").reset_index(drop=True)
    if times.notna().sum() == 0:
        return np.full(len(times), -1, dtype=np.int64)
    idx = ((times - times.min()) // unit).to_numpy(dtype="float64", na_value=np.nan)
    return np.where(np.isnan(idx), -1, idx).astype(np.int64)


def unit_permutation_threshold(reference: pd.Series, ref_units: np.ndarray, current: pd.Series,
                               cur_units: np.ndarray, score, alpha: float, draws: int,
                               seed: int = 0) -> float | None:
    """The distance a window must reach to drift at level `alpha` in a permutation test of whole time units.

    The units (days) of reference and current are pooled and re-split at random, each time as many units to the
    pseudo-window as the window holds, and `score(pseudo_reference, pseudo_window)` is recorded. Under "no shift"
    the units are exchangeable, so the observed distance is one more draw of that distribution: it drifts (p <=
    alpha) when at most alpha*(draws+1) - 1 of the draws reach it, i.e. when it reaches the returned value.
    Rows of one unit move together, so clustered rows (a brushing episode's 10-30 orders of one merchant, a
    stolen-card burst, a live-stream spike) count as one draw, not as many independent rows. None when the units
    allow fewer distinct splits than the test needs, or the draws are too few for alpha.
    """
    from math import comb

    ref_ok, cur_ok = reference.notna().to_numpy() & (ref_units >= 0), current.notna().to_numpy() & (cur_units >= 0)
    ref_vals, cur_vals = reference.to_numpy()[ref_ok], current.to_numpy()[cur_ok]
    ref_u, cur_u = np.unique(ref_units[ref_ok], return_inverse=True), np.unique(cur_units[cur_ok], return_inverse=True)
    n_ref_units, n_cur_units = len(ref_u[0]), len(cur_u[0])
    allowed = int(np.floor(alpha * (draws + 1) + 1e-9)) - 1  # draws at or above the observed one a drift allows
    if n_ref_units < 2 or n_cur_units < 1 or allowed < 0 or comb(n_ref_units + n_cur_units, n_cur_units) * alpha < 1:
        return None
    values = np.concatenate([ref_vals, cur_vals])
    units = np.concatenate([ref_u[1], cur_u[1] + n_ref_units])
    order = np.argsort(units, kind="stable")
    values, bounds = values[order], np.searchsorted(units[order], np.arange(n_ref_units + n_cur_units + 1))
    rng = np.random.default_rng(seed)
    scores = np.empty(draws)
    for i in range(draws):
        in_window = np.zeros(n_ref_units + n_cur_units, dtype=bool)
        in_window[rng.choice(n_ref_units + n_cur_units, size=n_cur_units, replace=False)] = True
        rows = np.repeat(in_window, np.diff(bounds))
        part, rest = values[rows], values[~rows]
        if len(part) < 2 or len(rest) < 2:
            scores[i] = np.inf  # an unusable split counts against drift
            continue
        scores[i] = score(pd.Series(rest), pd.Series(part))
    return float(np.sort(scores)[::-1][allowed])


def apply_permutation_floors(reference: pd.DataFrame, current: pd.DataFrame, tested: dict[str, dict[str, Any]],
                             settings: FamilyMonitorConfig, time_column: str) -> dict[str, dict[str, Any]]:
    """Columns whose distance reached their threshold must also reach their unit-permutation threshold
    (`unit_permutation_threshold`, at `permutation_alpha` over `permutation_unit`s); the threshold reported is the
    larger one. Only drifted distance columns are re-tested: the test can only raise a threshold. Pure."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    alpha = settings.permutation_alpha
    if not alpha or time_column not in reference.columns or time_column not in current.columns:
        return tested
    unit = parse_window(settings.permutation_unit)
    ref_units = time_units(reference[time_column], unit)
    cur_units = time_units(current[time_column], unit)
    out = dict(tested)
    for col, test in tested.items():
        if not test["drifted"] or test["score_kind"] != "distance":
            continue
        numeric = test["kind"] == "numerical"
        ctype = ColumnType.Numerical if numeric else ColumnType.Categorical

        def prepare(frame: pd.DataFrame) -> pd.Series:
            values = frame[col].reset_index(drop=True)
            return pd.to_numeric(values, errors="coerce").astype("float64") if numeric else \
                values.astype("object").where(values.notna(), None).map(lambda v: None if v is None else str(v))

        ref, cur = prepare(reference), prepare(current)
        stattest = get_stattest(ref.dropna(), cur.dropna(), ctype, test["method"])

        def score(rest: pd.Series, part: pd.Series, stattest=stattest, ctype=ctype, threshold=test["threshold"]):
            return float(stattest.func(rest, part, ctype, threshold)[0])

        floor = unit_permutation_threshold(ref, ref_units, cur, cur_units, score, alpha, settings.permutation_draws)
        if floor is not None and floor > test["threshold"]:
            out[col] = {**test, "threshold": floor, "drifted": bool(test["score"] >= floor)}
    return out


def value_drift_metrics(kinds: dict[str, str], settings: FamilyMonitorConfig, current: pd.DataFrame,
                        order: Sequence[str] | None = None, floors: dict[str, float] | None = None):
    """One Evidently ValueDrift metric per column, with the configured test and its effective threshold
    (raised to the column's reference noise floor, when given)."""
    from evidently.metrics import ValueDrift

    metrics = []
    for col in order or list(kinds):
        method, threshold = column_method(col, kinds[col], settings)
        threshold = effective_threshold(method, threshold, int(current[col].notna().sum()), settings.noise_factor)
        if floors and col in floors and threshold is not None:
            threshold = max(threshold, floors[col])
        metrics.append(ValueDrift(column=col, method=method, threshold=threshold))
    return metrics


def run_column_tests(reference: pd.DataFrame, current: pd.DataFrame, kinds: dict[str, str],
                     settings: FamilyMonitorConfig, floors: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Run Evidently ValueDrift on each column; returns {column: {kind, method, threshold, score, drifted}}."""
    from evidently import Report

    ref_ds, cur_ds = evidently_frames(reference, current, kinds)
    snapshot = Report(value_drift_metrics(kinds, settings, current, floors=floors),
                      include_tests=True).run(cur_ds, ref_ds)
    data = snapshot.dict()
    status = {t["metric_config"]["metric_id"]: t["status"] for t in data["tests"]}
    out: dict[str, dict[str, Any]] = {}
    for metric in data["metrics"]:
        cfg = metric["config"]
        col = cfg["column"]
        method = str(cfg.get("method"))
        out[col] = {
            "column": col,
            "kind": kinds[col],
            "method": method,
            "score_kind": "p_value" if (method in P_VALUE_METHODS or "p_value" in method) else "distance",
            "threshold": float(cfg.get("threshold")),
            "score": float(metric["value"]),
            "drifted": status.get(metric["id"]) == "FAIL",
        }
    return out


def _column(test: dict[str, Any], role: str, reference: pd.DataFrame, current: pd.DataFrame) -> ColumnDrift:
    col = test["column"]
    return ColumnDrift(column=col, role=role, kind=test["kind"], method=test["method"],
                       score_kind=test["score_kind"], threshold=test["threshold"], score=test["score"],
                       drifted=test["drifted"], n_reference=int(reference[col].notna().sum()),
                       n_current=int(current[col].notna().sum()))


def _is_nested(series: pd.Series) -> bool:
    sample = series.dropna().head(20)
    return any(isinstance(v, (list, dict, tuple, np.ndarray)) for v in sample)
