"""Demand pipeline: a global LightGBM quantile model (P10/P50/P90) over all sku x market series, horizons 1..H.

Training examples: for sampled series x forecast origins ("as_of", the first unobserved period; features are
the feature store's point-in-time values at that moment) and sampled horizons h, the target is the units sold
on day as_of + (h-1) periods. Known-future covariates of the target day (price, discount, promotion,
live-stream sessions, calendar) come with the example, as a caller would plan them. Stock-out days are not
targets (their sales are censored demand). Young series are kept: history length and launch age are features.
Weekly data (table metadata frequency "W") works the same with periods of a week.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from training import metrics as M
from training.backtest import FitPredict, Fold, rolling_cutoffs, rolling_origin_folds
from training.baselines import moving_average, period_delta, seasonal_naive
from training.config import DemandConfig
from training.pipeline import Progress, TrainingSet, feature_importance_figure
from training.pyfunc import TradecastModel
from tradecast.errors import TradecastError

SERVICE = "demand_v1"
OUTPUTS = ["p10", "p50", "p90"]
CATEGORICAL = ["sku_tier", "sku_category", "market_region", "market"]
# request fields the caller plans for the target day, plus calendar and horizon derived from dates
REQUEST_NUMERIC = ["price", "discount", "live_sessions", "is_promotion", "target_dow", "target_month",
                   "target_dayofyear", "horizon"]
REQUEST_COLUMNS = ["sku_id", "market", "as_of", "target_date", "price", "discount", "live_sessions", "is_promotion"]
# domain knowledge: planned promotions, live streams and discounts never lower the forecast
MONOTONE = {"is_promotion": 1, "live_sessions": 1, "discount": 1}
NOT_FEATURES = {"series_id", "event_timestamp", "sku_id", "as_of", "target_date", "units", "stock_out",
                "example_id", "fold", "candidate"}


def prepare_features(frame: pd.DataFrame, frequency: str = "D") -> pd.DataFrame:
    """Add the derived request columns (calendar of the target day, horizon, on-demand features) when absent."""
    from features.on_demand import ON_DEMAND_OUTPUTS, calendar_columns, demand_request_features

    out = frame.copy()
    for c in ("target_date", "as_of"):
        if c not in out:
            raise TradecastError(f"demand model input is missing column '{c}'")
    target = pd.to_datetime(out["target_date"])
    if getattr(target.dt, "tz", None) is not None:
        target = target.dt.tz_convert("UTC").dt.tz_localize(None)
    cal = calendar_columns(target)
    for c in cal.columns:  # always derived from the dates, never trusted from the caller
        out[c] = cal[c].to_numpy()
    as_of = pd.to_datetime(out["as_of"])
    if getattr(as_of.dt, "tz", None) is not None:
        as_of = as_of.dt.tz_convert("UTC").dt.tz_localize(None)
    out["horizon"] = (((target - as_of) / period_delta(frequency)).round() + 1).astype("float64")
    if "is_promotion" not in out and "promotion_event" in out:
        out["is_promotion"] = (out["promotion_event"].notna() & (out["promotion_event"].astype(str) != "")).astype(float)
    for c in ("discount", "live_sessions", "is_promotion"):
        if c in out:
            out[c] = pd.to_numeric(out[c], errors="coerce").fillna(0.0)
    missing = [c for c in ON_DEMAND_OUTPUTS["demand_request"] if c not in out]
    if missing:
        extra = demand_request_features(out)
        for c in missing:
            out[c] = extra[c]
    return out


def predict_outputs(model: TradecastModel, frame: pd.DataFrame) -> pd.DataFrame:
    """p10, p50, p90 units for each row (the packaged model's predict)."""
    prepared = prepare_features(frame, model.spec.get("frequency", "D"))
    q = model.estimators["model"].predict_quantiles(prepared)
    return pd.DataFrame(np.clip(q, 0, None), columns=OUTPUTS, index=frame.index)


@dataclass
class DemandFamily:
    """The demand family for the shared pipeline (training.pipeline.train)."""

    config: DemandConfig
    name: str = "demand"
    baseline_candidates: tuple[str, ...] = ("seasonal_naive", "moving_average")
    history: pd.DataFrame | None = None
    frequency: str = "D"
    mase_scale: dict[int, float] = field(default_factory=dict)

    @property
    def model_candidates(self) -> tuple[str, ...]:
        return ("lightgbm", "pytorch") if self.config.challenger.enabled else ("lightgbm",)

    @property
    def season(self) -> int:
        return self.config.season_weekly if self.frequency == "W" else self.config.season_daily

    # ---------------------------------------------------------------- training set
    def build_training_set(self, progress: Progress) -> TrainingSet:
        from features.offline import read_table, table_metadata

        sales = read_table("daily_sales")
        self.frequency = table_metadata("daily_sales").get("frequency", "D")
        if self.frequency not in ("D", "W"):
            raise TradecastError(f"daily_sales: unknown frequency '{self.frequency}' in the table metadata")
        sales = sales.assign(date=pd.to_datetime(sales["date"]).dt.normalize())
        self.history = sales[["sku_id", "market", "date", "units"]].copy()
        examples = sample_examples(sales, self.config, self.frequency)
        progress(f"sampled {len(examples):,} (series, origin, horizon) examples; joining point-in-time features")
        frame = join_features(examples, self.config.feature_join)
        frame = prepare_features(frame, self.frequency)
        numeric, categorical = feature_columns(frame)
        period = period_delta(self.frequency)
        meta = {"frequency": self.frequency, "series": int(examples[["sku_id", "market"]].drop_duplicates().shape[0]),
                "first_day": str(sales["date"].min().date()), "last_day": str(sales["date"].max().date()),
                "max_horizon": self.max_horizon}
        from features import store

        return TrainingSet(frame=frame, event_time=frame["as_of"], label_time=frame["target_date"] + period,
                           numeric=numeric, categorical=categorical, request_columns=REQUEST_COLUMNS,
                           store_features=store.feature_names(SERVICE), meta=meta)

    @property
    def max_horizon(self) -> int:
        return self.config.max_horizon_weekly if self.frequency == "W" else self.config.max_horizon

    # ---------------------------------------------------------------- backtest
    def folds(self, ts: TrainingSet) -> list[Fold]:
        bt = self.config.backtest
        period = period_delta(self.frequency)
        last = ts.frame["target_date"].max() + period
        cutoffs = rolling_cutoffs(last, bt.folds, pd.Timedelta(days=bt.step_days), pd.Timedelta(days=bt.test_days),
                                  lead=period * self.max_horizon)
        folds = rolling_origin_folds(ts.event_time, ts.label_time, cutoffs, pd.Timedelta(days=bt.test_days))
        for f in folds:
            hist = self.history[self.history["date"] < f.cutoff]
            self.mase_scale[f.number] = M.seasonal_naive_scale(hist, ["sku_id", "market"], "date", "units",
                                                                self.season if len(hist) else 1)
        return folds

    def candidates(self, ts: TrainingSet) -> dict[str, FitPredict]:
        out: dict[str, FitPredict] = {"lightgbm": self._fit_predict(lambda: self._lightgbm(ts))}
        if self.config.challenger.enabled:
            out["pytorch"] = self._fit_predict(lambda: self._torch(ts))
        out["seasonal_naive"] = lambda train, test: _point(
            seasonal_naive(self.history, test, self.season, self.frequency))
        out["moving_average"] = lambda train, test: _point(
            moving_average(self.history, test, self.config.moving_average_window, self.frequency))
        return out

    def _fit_predict(self, make) -> FitPredict:
        def fit_predict(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
            est = make().fit(train, train["units"])
            return pd.DataFrame(est.predict_quantiles(test), columns=OUTPUTS)
        return fit_predict

    def _lightgbm(self, ts: TrainingSet):
        from training.distributed import DaskLGBMQuantileRegressor, active_client
        from training.estimators import LGBMQuantileRegressor, lgbm_params

        # on a Dask cluster when the pipeline runs inside training.distributed.training_cluster()
        cls = DaskLGBMQuantileRegressor if active_client() is not None else LGBMQuantileRegressor
        return cls(numeric=ts.numeric, categorical=ts.categorical,
                   quantiles=tuple(self.config.quantiles), params=lgbm_params(self.config.lightgbm),
                   monotone={k: v for k, v in MONOTONE.items() if k in ts.numeric}, log_target=True)

    def _torch(self, ts: TrainingSet):
        from training.torch_models import TorchQuantileRegressor

        c = self.config.challenger
        return TorchQuantileRegressor(numeric=ts.numeric, categorical=ts.categorical,
                                      quantiles=tuple(self.config.quantiles), hidden=tuple(c.hidden),
                                      embedding_dim=c.embedding_dim, epochs=c.epochs, batch_size=c.batch_size,
                                      learning_rate=c.learning_rate, weight_decay=c.weight_decay, threads=c.threads,
                                      seed=c.seed)

    def refit_from_model(self, model: TradecastModel, ts: TrainingSet) -> FitPredict:
        from sklearn.base import clone

        return self._fit_predict(lambda: clone(model.estimators["model"]))

    # ---------------------------------------------------------------- scoring
    def score(self, rows: pd.DataFrame) -> dict[str, float]:
        y = rows["units"].to_numpy(dtype="float64")
        out = M.demand_metrics(y, rows["p10"], rows["p50"], rows["p90"])
        scale = rows["fold"].map(self.mase_scale).to_numpy(dtype="float64")
        with np.errstate(divide="ignore", invalid="ignore"):
            out["mase"] = float(np.nanmean(np.abs(y - rows["p50"].to_numpy()) / scale))
        return out

    def breakdown(self, ts: TrainingSet, predictions: pd.DataFrame) -> pd.DataFrame:
        """Accuracy, bias and coverage by SKU tier and by promotion/live-stream vs normal days."""
        joined = predictions.join(ts.frame[["units", "sku_tier", "is_promotion", "live_sessions", "horizon"]])
        joined["day_type"] = np.where((joined["is_promotion"] > 0) | (joined["live_sessions"] > 0), "promo_or_live",
                                      "normal")
        h = joined["horizon"]
        joined["horizon_band"] = np.select([h <= 7, h <= 28], ["h01-07", "h08-28"], "h29+")
        rows = []
        for by in ("sku_tier", "day_type", "horizon_band"):
            for (cand, group), part in joined.groupby(["candidate", by], observed=True):
                m = M.demand_metrics(part["units"], part["p10"], part["p50"], part["p90"])
                rows.append({"split": by, "group": group, "candidate": cand, "accuracy": m["accuracy"],
                             "bias": m["bias"], "coverage_p10_p90": m["coverage_p10_p90"], "n": m["n"]})
        return pd.DataFrame(rows)

    def sanity(self, table: pd.DataFrame, candidate: str) -> dict[str, bool]:
        from training.pipeline import overall

        m = overall(table, candidate)
        base = overall(table, "seasonal_naive")
        g = self.config.gate
        checks = {
            "finite_metrics": all(np.isfinite(m.get(k, np.nan)) for k in ("accuracy", "pinball", "coverage_p10_p90")),
            f"coverage_in_{g.min_coverage}_{g.max_coverage}":
                g.min_coverage <= m.get("coverage_p10_p90", 0) <= g.max_coverage,
            f"abs_bias_at_most_{g.max_abs_bias}": abs(m.get("bias", np.inf)) <= g.max_abs_bias,
        }
        if self.config.gate.require_beats_baseline:
            checks["beats_seasonal_naive"] = m.get("accuracy", -np.inf) > base.get("accuracy", np.inf)
        return checks

    def behaviour(self, model: TradecastModel, ts: TrainingSet) -> dict[str, bool]:
        """Planned promotions and live streams never lower the P50 forecast (checked on sampled rows)."""
        from training.pipeline import behaviour_rows

        x = behaviour_rows(ts)
        base = model.predict_frame(x.assign(is_promotion=0.0, live_sessions=0.0))["p50"]
        promo = model.predict_frame(x.assign(is_promotion=1.0, live_sessions=0.0))["p50"]
        live = model.predict_frame(x.assign(is_promotion=0.0, live_sessions=2.0))["p50"]
        return {"promotion_never_lowers_p50": bool((promo >= base - 1e-6).all()),
                "live_stream_never_lowers_p50": bool((live >= base - 1e-6).all())}

    # ---------------------------------------------------------------- final model
    def fit_final(self, ts: TrainingSet, candidate: str) -> TradecastModel:
        est = (self._torch(ts) if candidate == "pytorch" else self._lightgbm(ts)).fit(ts.frame, ts.frame["units"])
        spec = {"input_columns": ts.input_columns, "output_columns": OUTPUTS, "frequency": self.frequency,
                "numeric": ts.numeric, "categorical": ts.categorical, "quantiles": list(self.config.quantiles),
                "estimator": candidate, "feature_service": SERVICE, "max_horizon": self.max_horizon}
        return TradecastModel("demand", {"model": est}, spec)

    def figures(self, ts: TrainingSet, predictions: pd.DataFrame, model: TradecastModel, candidate: str) -> dict[str, Any]:
        est = model.estimators["model"]
        figs = {"forecast_vs_actual": forecast_figure(ts.frame, predictions, candidate)}
        if hasattr(est, "feature_importances_"):
            figs["feature_importance"] = feature_importance_figure(est.columns_, est.feature_importances_)
        return figs


def _point(values: np.ndarray) -> pd.DataFrame:
    """A point forecast as a degenerate interval (baselines have no quantiles)."""
    return pd.DataFrame({"p10": values, "p50": values, "p90": values})


def sample_examples(sales: pd.DataFrame, cfg: DemandConfig, frequency: str) -> pd.DataFrame:
    """Sample (series, as_of, horizon) examples with their target-day units and planned covariates (vectorised)."""
    rng = np.random.default_rng(cfg.seed)
    period = period_delta(frequency)
    max_h = cfg.max_horizon_weekly if frequency == "W" else cfg.max_horizon
    every = cfg.origin_every_weekly if frequency == "W" else cfg.origin_every
    first_day, last_day = sales["date"].min(), sales["date"].max()
    # origins aligned so that the most recent one is the day after the data ends, going back `every` periods
    n_orig = int(((last_day - first_day) / period) // every) + 1
    origins = pd.DatetimeIndex([last_day + period - period * every * k for k in range(n_orig)][::-1])
    series = sales.groupby(["sku_id", "market"], observed=True)["date"].min().rename("first").reset_index()
    pairs = series.merge(pd.DataFrame({"as_of": origins}), how="cross")
    pairs = pairs[pairs["as_of"] >= pairs["first"] + period * cfg.min_history]
    pairs = pairs[pairs["as_of"] <= last_day]  # at least one target period left to learn from
    per_pair = cfg.horizons_per_origin
    max_pairs = max(cfg.max_training_rows // per_pair, 1)
    if len(pairs) > max_pairs:
        pairs = pairs.iloc[np.sort(rng.choice(len(pairs), max_pairs, replace=False))]
    h = rng.integers(1, max_h + 1, size=(len(pairs), per_pair))
    ex = pairs.loc[pairs.index.repeat(per_pair), ["sku_id", "market", "as_of"]].reset_index(drop=True)
    ex["horizon"] = h.reshape(-1).astype("float64")
    ex["target_date"] = ex["as_of"] + period * (ex["horizon"].astype("int64") - 1)
    cols = ["sku_id", "market", "date", "units", "price", "discount", "promotion_event", "live_sessions", "stock_out"]
    target = sales[[c for c in cols if c in sales.columns]].rename(columns={"date": "target_date"})
    ex = ex.merge(target, on=["sku_id", "market", "target_date"], how="inner")
    if "stock_out" in ex:
        ex = ex[~ex["stock_out"].fillna(False).astype(bool)]
    ex = ex.drop_duplicates(["sku_id", "market", "as_of", "target_date"])
    if ex.empty:
        raise TradecastError("daily_sales: no training examples (too little history for the configured "
                             "min_history / max_horizon)")
    ex["is_promotion"] = (ex["promotion_event"].notna() & (ex["promotion_event"].astype(str) != "")).astype(float) \
        if "promotion_event" in ex else 0.0
    for c in ("discount", "live_sessions"):
        ex[c] = pd.to_numeric(ex[c], errors="coerce").fillna(0.0).astype("float64") if c in ex else 0.0
    ex["units"] = ex["units"].astype("float64")
    ex = ex.sort_values(["as_of", "sku_id", "market", "target_date"]).reset_index(drop=True)
    return ex.drop(columns=[c for c in ("stock_out", "promotion_event") if c in ex])


def join_features(examples: pd.DataFrame, join: str = "asof") -> pd.DataFrame:
    """Point-in-time join of the demand_v1 features at each example's as_of (training.pointintime)."""
    from training.pointintime import training_frame

    entity = examples.copy()
    entity["series_id"] = entity["sku_id"].astype(str) + "|" + entity["market"].astype(str)
    entity["event_timestamp"] = pd.to_datetime(entity["as_of"]).dt.tz_localize("UTC")
    entity["target_dow"] = pd.to_datetime(entity["target_date"]).dt.dayofweek.astype("float64")
    entity["example_id"] = np.arange(len(entity))
    joined = training_frame(SERVICE, entity, join)
    joined = joined.sort_values("example_id").reset_index(drop=True)
    if len(joined) != len(entity):
        raise TradecastError(f"feature store returned {len(joined)} rows for {len(entity)} demand examples")
    return joined


def feature_columns(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Numeric and categorical model inputs of a prepared frame (IDs, labels and times excluded)."""
    from features import store

    names = [n for n in store.feature_names(SERVICE) if n in frame.columns]
    categorical = [c for c in CATEGORICAL if c in frame.columns]
    numeric = [n for n in names if n not in categorical and n not in NOT_FEATURES
               and pd.api.types.is_numeric_dtype(frame[n])]
    numeric += [c for c in REQUEST_NUMERIC if c in frame.columns and c not in numeric]
    return numeric, categorical


def forecast_figure(frame: pd.DataFrame, predictions: pd.DataFrame, candidate: str, n_series: int = 4):
    """Actual units vs the P50 and P10-P90 band on the last fold, for the largest series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = predictions[(predictions["candidate"] == candidate) & (predictions["fold"] == predictions["fold"].max())]
    joined = pred.join(frame[["sku_id", "market", "target_date", "units", "horizon"]])
    joined = joined[joined["horizon"] <= 28]
    top = joined.groupby(["sku_id", "market"], observed=True)["units"].sum().nlargest(n_series).index
    fig, axes = plt.subplots(len(top) or 1, 1, figsize=(8, 2.2 * max(len(top), 1)), squeeze=False)
    for ax, (sku, market) in zip(axes[:, 0], top):
        part = joined[(joined["sku_id"] == sku) & (joined["market"] == market)].sort_values("target_date")
        daily = part.groupby("target_date").agg(units=("units", "mean"), p10=("p10", "mean"), p50=("p50", "mean"),
                                                p90=("p90", "mean"))
        ax.fill_between(daily.index, daily["p10"], daily["p90"], alpha=0.3, label="P10-P90")
        ax.plot(daily.index, daily["p50"], label="P50")
        ax.plot(daily.index, daily["units"], "k.", label="actual")
        ax.set_title(f"{sku} {market} ({candidate}, horizons <= 28)", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig
