"""Delay pipeline: LightGBM P50/P90 transit days and a calibrated P(late vs promised) per shipment.

Examples are delivered shipments stamped at creation (features are the lane/carrier statistics known then);
an example's label is known from its delivery time, so a backtest fold only trains on shipments delivered
before the cutoff. The customs channel is an ordinal input (fast lane < standard < inspection) constrained,
like the lane's recent transit level, never to lower the predicted delay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sklearn.base import BaseEstimator, RegressorMixin, clone

from training import metrics as M
from training.backtest import FitPredict, Fold, rolling_cutoffs, rolling_origin_folds
from training.baselines import LaneMedianBaseline
from training.config import DelayConfig
from training.pipeline import Progress, TrainingSet, calibration_figure, feature_importance_figure
from training.pyfunc import TradecastModel
from tradecast.errors import TradecastError

SERVICE = "delay_v1"
OUTPUTS = ["p50_days", "p90_days", "p_late", "expected_delay_hours", "alert"]
CUSTOMS_ORDER = {"fast_lane": 0.0, "standard": 1.0, "inspection": 2.0}
CATEGORICAL = ["mode", "destination_market", "category"]
REQUEST_NUMERIC = ["weight_kg", "declared_value", "promised_days", "customs_level", "created_month",
                   "created_dayofyear", "created_dow"]
REQUEST_COLUMNS = ["lane", "mode", "carrier", "origin_warehouse", "destination_market", "category", "weight_kg",
                   "declared_value", "hs_code", "promised_days", "customs_channel", "created_at"]
# never lower the predicted transit: a customs inspection, a slower lane (its recent transit level, every window)
MONOTONE_PREFIXES = {"lane_transit_median_": 1, "lane_transit_p90_": 1}
MONOTONE_FIXED = {"customs_level": 1, "promised_minus_lane_median": -1, "promised_vs_lane_p90": -1}


# promise-vs-lane differences: for P(late) a looser promise means less risk (-1); the transit model leaves them
# out, because the promise also tells how slow the carrier is, which would fight the lane constraint
PROMISE_VS_LANE = ("promised_minus_lane_median", "promised_vs_lane_p90")


# The transit model predicts multiples of the shipment's promise times its corridor's recent transit-to-promise
# ratio (mode|destination region, deliveries of the last 28 days; the promise alone when the corridor had fewer than
# LEVEL_MIN_DELIVERED deliveries): the level a shipment created now should expect.
LEVEL_RATIO = "corridor_delay_ratio_28d"
LEVEL_COUNT = "corridor_delivered_28d"
LEVEL_MIN_DELIVERED = 10
LEVEL_BASE = "promised_days"


class LaneRelativeRegressor(RegressorMixin, BaseEstimator):
    """Transit quantiles as (current level) x (a learned multiple): `inner` is fitted on transit / level, where
    level = promised days x the corridor's recent transit/promise ratio.

    Trees cannot extrapolate: a model fitted on transit directly caps its answer at the slowest level it saw with
    labels, so when a corridor slows down (a Red Sea diversion adds 1-2 weeks to sea lanes to Europe) a retrain has
    to wait until slow shipments with labels pile up, and those are the last to be delivered (censoring). As a
    multiple of the level the corridor shows now, the answer follows the corridor as soon as its recent deliveries
    do. A slower lane never lowers the answer: the level does not depend on the lane's own statistics and the
    multiple never falls with them (`inner`'s monotone constraints).
    """

    def __init__(self, inner: Any = None, ratio: str = LEVEL_RATIO, count: str = LEVEL_COUNT,
                 min_count: float = LEVEL_MIN_DELIVERED, base: str = LEVEL_BASE):
        self.inner = inner
        self.ratio = ratio
        self.count = count
        self.min_count = min_count
        self.base = base

    def reference_level(self, X: pd.DataFrame) -> np.ndarray:
        """The expected transit level per row (at least 0.5 day)."""
        def col(name: str) -> np.ndarray:
            if name not in X:
                return np.full(len(X), np.nan)
            return pd.to_numeric(X[name], errors="coerce").to_numpy(dtype="float64")

        ratio, count, base = col(self.ratio), col(self.count), col(self.base)
        ok = np.isfinite(ratio) & (ratio > 0) & (np.nan_to_num(count, nan=0.0) >= self.min_count)
        base = np.where(np.isfinite(base) & (base > 0), base, self.default_level_)
        return np.clip(base * np.where(ok, ratio, 1.0), 0.5, None)

    def fit(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> "LaneRelativeRegressor":
        target = np.asarray(y, dtype="float64")
        self.default_level_ = float(np.nanmedian(target)) if len(target) else 1.0
        self.inner_ = clone(self.inner).fit(X, target / self.reference_level(X), sample_weight=sample_weight)
        self.columns_ = self.inner_.columns_
        self.feature_importances_ = self.inner_.feature_importances_
        return self

    def predict_quantiles(self, X: pd.DataFrame) -> np.ndarray:
        return self.inner_.predict_quantiles(X) * self.reference_level(X)[:, None]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.inner_.predict(X) * self.reference_level(X)


def monotone_constraints(numeric: list[str], late: bool) -> dict[str, int]:
    """+1/-1 constraints of the transit model (late=False) or the late classifier (late=True)."""
    out = {c: v for c, v in MONOTONE_FIXED.items() if c in numeric}
    out.update({c: v for c in numeric for p, v in MONOTONE_PREFIXES.items() if c.startswith(p)})
    if late and "promised_days" in numeric:
        out["promised_days"] = -1
    return out


def prepare_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Add derived request columns (customs level, calendar of creation, on-demand features) when absent."""
    from features.on_demand import ON_DEMAND_OUTPUTS, delay_request_features

    out = frame.copy()
    # derived inputs are always recomputed from the request fields, never trusted from the caller
    if "customs_channel" in out:
        level = out["customs_channel"].astype("object").map(CUSTOMS_ORDER)
        unknown = out["customs_channel"].notna() & level.isna()
        if unknown.any():
            bad = sorted(set(out.loc[unknown, "customs_channel"].astype(str)))[:3]
            raise TradecastError(f"customs_channel: unknown value(s) {bad}; allowed: {list(CUSTOMS_ORDER)}")
        out["customs_level"] = level.astype("float64")
    else:
        out["customs_level"] = np.nan
    if "created_at" not in out:
        raise TradecastError("delay model input is missing column 'created_at'")
    created = pd.to_datetime(out["created_at"])
    if getattr(created.dt, "tz", None) is not None:
        created = created.dt.tz_convert("UTC").dt.tz_localize(None)
    for name, values in (("created_month", created.dt.month), ("created_dayofyear", created.dt.dayofyear),
                         ("created_dow", created.dt.dayofweek)):
        out[name] = values.astype("float64").to_numpy()
    missing = [c for c in ON_DEMAND_OUTPUTS["delay_request"] if c not in out]
    if missing:
        extra = delay_request_features(out)
        for c in missing:
            out[c] = extra[c]
    return out


def predict_outputs(model: TradecastModel, frame: pd.DataFrame) -> pd.DataFrame:
    """p50_days, p90_days, p_late, expected_delay_hours and the >48 h alert for each shipment."""
    x = prepare_features(frame)
    q = model.estimators["transit"].predict_quantiles(x)
    p50, p90 = q[:, 0], q[:, 1]
    p_late = model.estimators["late"].predict_proba(x)[:, 1]
    promised = pd.to_numeric(x["promised_days"], errors="coerce").to_numpy(dtype="float64")
    over = np.nan_to_num(p50 - promised, nan=0.0)
    hours = model.spec.get("alert_hours", 48.0)
    return pd.DataFrame({"p50_days": p50, "p90_days": p90, "p_late": p_late,
                         "expected_delay_hours": np.clip(over, 0, None) * 24.0,
                         "alert": over * 24.0 > hours}, index=frame.index)


@dataclass
class DelayFamily:
    """The delay family for the shared pipeline."""

    config: DelayConfig
    name: str = "delay"
    model_candidates: tuple[str, ...] = ("lightgbm",)
    baseline_candidates: tuple[str, ...] = ("lane_median",)

    def build_training_set(self, progress: Progress) -> TrainingSet:
        from features import store
        from features.offline import read_table

        shipments = read_table("shipments")
        entity = store.delay_entities(shipments)
        if entity.empty:
            raise TradecastError("shipments: no delivered shipments with a known transit time to train on")
        if len(entity) > self.config.max_training_rows:  # keep the most recent shipments
            entity = entity.iloc[-self.config.max_training_rows:].reset_index(drop=True)
        progress(f"{len(entity):,} delivered shipments; joining point-in-time lane and carrier features")
        from training.pointintime import training_frame

        frame = training_frame(SERVICE, entity, self.config.feature_join)
        frame = prepare_features(frame)
        frame["late"] = frame["late"].astype("boolean").fillna(False).astype(int)
        frame["transit_days"] = frame["transit_days"].astype("float64")
        frame["promised_days"] = pd.to_numeric(frame["promised_days"], errors="coerce")
        frame = frame[frame["promised_days"].notna()].reset_index(drop=True)
        names = [n for n in store.feature_names(SERVICE) if n in frame.columns]
        numeric = [n for n in names if pd.api.types.is_numeric_dtype(frame[n])]
        numeric += [c for c in REQUEST_NUMERIC if c in frame.columns and c not in numeric]
        categorical = [c for c in CATEGORICAL if c in frame.columns]
        created = pd.to_datetime(frame["created_at"])
        delivered = pd.to_datetime(frame["delivered_at"])
        meta = {"first_day": str(created.min().date()), "last_day": str(delivered.max().date()),
                "late_rate": round(float(frame["late"].mean()), 4)}
        return TrainingSet(frame=frame, event_time=created, label_time=delivered, numeric=numeric,
                           categorical=categorical, request_columns=REQUEST_COLUMNS,
                           store_features=store.feature_names(SERVICE), meta=meta)

    def folds(self, ts: TrainingSet) -> list[Fold]:
        bt = self.config.backtest
        # the last cutoff leaves room for the slowest (sea) shipments of the last test window to be delivered
        lead = pd.Timedelta(days=float(np.ceil(np.quantile(ts.frame["transit_days"], 0.95))))
        cutoffs = rolling_cutoffs(ts.event_time.max() + pd.Timedelta(days=1), bt.folds,
                                  pd.Timedelta(days=bt.step_days), pd.Timedelta(days=bt.test_days), lead=lead)
        return rolling_origin_folds(ts.event_time, ts.label_time, cutoffs, pd.Timedelta(days=bt.test_days))

    def _estimators(self, ts: TrainingSet) -> dict[str, Any]:
        from training.estimators import LGBMCalibratedClassifier, LGBMQuantileRegressor, lgbm_params

        params = lgbm_params(self.config.lightgbm)
        transit_numeric = [c for c in ts.numeric if c not in PROMISE_VS_LANE]
        return {
            "transit": LaneRelativeRegressor(LGBMQuantileRegressor(
                numeric=transit_numeric, categorical=ts.categorical, quantiles=(0.5, 0.9), params=params,
                log_target=True, monotone=monotone_constraints(transit_numeric, late=False))),
            "late": LGBMCalibratedClassifier(numeric=ts.numeric, categorical=ts.categorical, params=params,
                                             calibration_share=self.config.calibration_share,
                                             monotone=monotone_constraints(ts.numeric, late=True)),
        }

    def _fit(self, estimators: dict[str, Any], train: pd.DataFrame) -> dict[str, Any]:
        estimators["transit"].fit(train, train["transit_days"])
        estimators["late"].fit(train, train["late"], sample_time=pd.to_datetime(train["created_at"]))
        return estimators

    def _model(self, estimators: dict[str, Any], ts: TrainingSet, candidate: str) -> TradecastModel:
        spec = {"input_columns": ts.input_columns, "output_columns": OUTPUTS, "numeric": ts.numeric,
                "categorical": ts.categorical, "alert_hours": self.config.alert_hours, "estimator": candidate,
                "feature_service": SERVICE}
        return TradecastModel("delay", estimators, spec)

    def candidates(self, ts: TrainingSet) -> dict[str, FitPredict]:
        def lightgbm(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
            model = self._model(self._fit(self._estimators(ts), train), ts, "lightgbm")
            return predict_outputs(model, test).reset_index(drop=True)

        def lane_median(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
            base = LaneMedianBaseline().fit(train, train["transit_days"], late=train["late"])
            out = base.predict_frame(test).reset_index(drop=True)
            return out.rename(columns={"p50": "p50_days", "p90": "p90_days"})

        return {"lightgbm": lightgbm, "lane_median": lane_median}

    def refit_from_model(self, model: TradecastModel, ts: TrainingSet) -> FitPredict:
        from sklearn.base import clone

        def fit_predict(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
            fresh = {k: clone(v) for k, v in model.estimators.items()}
            return predict_outputs(TradecastModel("delay", self._fit(fresh, train), model.spec), test).reset_index(drop=True)
        return fit_predict

    def score(self, rows: pd.DataFrame) -> dict[str, float]:
        return M.delay_metrics(rows["transit_days"], rows["p50_days"], rows["p90_days"], rows["promised_days"],
                               rows["p_late"], rows["late"], self.config.alert_hours)

    def breakdown(self, ts: TrainingSet, predictions: pd.DataFrame) -> pd.DataFrame:
        joined = predictions.join(ts.frame[["mode", "transit_days", "late", "promised_days"]])
        rows = []
        for (cand, mode), part in joined.groupby(["candidate", "mode"], observed=True):
            m = self.score(part)
            rows.append({"split": "mode", "group": mode, "candidate": cand, "mae": m["mae"],
                         "p90_coverage": m["p90_coverage"], "late_auc": m["late_auc"], "n": m["n"]})
        return pd.DataFrame(rows)

    def sanity(self, table: pd.DataFrame, candidate: str) -> dict[str, bool]:
        from training.pipeline import overall

        m = overall(table, candidate)
        base = overall(table, "lane_median")
        g = self.config.gate
        checks = {
            "finite_metrics": all(np.isfinite(m.get(k, np.nan)) for k in ("mae", "p90_coverage", "late_brier")),
            f"p90_coverage_in_{g.min_coverage}_{g.max_coverage}":
                g.min_coverage <= m.get("p90_coverage", 0) <= g.max_coverage,
            "late_auc_above_0.5": m.get("late_auc", 0) > 0.5,
        }
        if self.config.gate.require_beats_baseline:
            checks["beats_lane_median"] = m.get("mae", np.inf) < base.get("mae", -np.inf)
        return checks

    def behaviour(self, model: TradecastModel, ts: TrainingSet) -> dict[str, bool]:
        """A customs inspection or a slower lane never lowers the predicted transit or P(late)."""
        from features.on_demand import ON_DEMAND_OUTPUTS
        from training.pipeline import behaviour_rows

        x = behaviour_rows(ts)
        fast = model.predict_frame(x.assign(customs_channel="fast_lane"))
        inspected = model.predict_frame(x.assign(customs_channel="inspection"))
        base = model.predict_frame(x)
        slower = {c: x[c] * 1.5 for c in x.columns if c.startswith(tuple(MONOTONE_PREFIXES))}
        longer = model.predict_frame(x.assign(**slower).drop(columns=ON_DEMAND_OUTPUTS["delay_request"],
                                                             errors="ignore"))
        return {"inspection_never_lowers_delay": bool((inspected["p50_days"] >= fast["p50_days"] - 1e-9).all()
                                                      and (inspected["p_late"] >= fast["p_late"] - 1e-12).all()),
                "slower_lane_never_lowers_delay": bool((longer["p50_days"] >= base["p50_days"] - 1e-9).all()
                                                       and (longer["p_late"] >= base["p_late"] - 1e-12).all())}

    def fit_final(self, ts: TrainingSet, candidate: str) -> TradecastModel:
        return self._model(self._fit(self._estimators(ts), ts.frame), ts, candidate)

    def figures(self, ts: TrainingSet, predictions: pd.DataFrame, model: TradecastModel, candidate: str) -> dict[str, Any]:
        joined = predictions.join(ts.frame[["late"]])
        labels = joined.loc[joined["candidate"] == candidate, "late"].to_numpy()
        probs = {c: joined.loc[joined["candidate"] == c, "p_late"].to_numpy() for c in (candidate, "lane_median")}
        est = model.estimators["transit"]
        return {"calibration_late": calibration_figure(labels, probs),
                "feature_importance": feature_importance_figure(est.columns_, est.feature_importances_)}
