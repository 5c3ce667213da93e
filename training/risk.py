"""Risk pipeline: calibrated P(fraud) and P(compliance issue) per order, a risk level and reason codes.

Label lag: chargebacks arrive 30-90 days after the order, so an order only becomes a training example once
its label window (FRAUD_LABEL_WINDOW_DAYS) has closed; before that a missing chargeback means nothing.
Positives wait for the window too, so the recent rows used for calibration are not enriched with the early
chargebacks (which would inflate P(fraud)). Class imbalance: positives are up-weighted by sqrt(neg/pos) in
LightGBM and the probabilities are then Platt-calibrated on the latest time slice of the training rows.
Reason codes: the features with the largest positive LightGBM contributions (pred_contrib), in readable words.
Inside training.distributed.training_cluster() the LightGBM boosters are trained through lightgbm.dask
(DaskLGBMCalibratedClassifier: same weighting and calibration) and packaged as plain local classifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from training import metrics as M
from training.backtest import FitPredict, Fold, rolling_cutoffs, rolling_origin_folds
from training.baselines import rules_risk_score
from training.config import RiskConfig
from training.pipeline import Progress, TrainingSet, calibration_figure, feature_importance_figure
from training.pyfunc import TradecastModel
from tradecast.errors import TradecastError

SERVICE = "risk_v1"
OUTPUTS = ["p_fraud", "p_compliance", "risk_level", "reason_codes"]
LEVELS = ("low", "medium", "high", "critical")
CATEGORICAL = ["merchant_credit_grade", "merchant_size_tier", "market", "payment_method", "category"]
REQUEST_NUMERIC = ["amount", "quantity", "order_hour"]
REQUEST_COLUMNS = ["order_id", "ordered_at", "buyer_id", "merchant_id", "device_id", "ip", "market", "category",
                   "order_category", "quantity", "amount", "payment_method", "ip_country", "card_country",
                   "shipping_country", "declared_value", "hs_code", "item_description", "account_age_days"]
VELOCITY = ["ip_orders_1h", "device_orders_1h", "buyer_orders_1h", "ip_orders_24h", "device_orders_24h"]
# more orders from one IP/device, more country mismatches, a newer account: never less fraud risk
MONOTONE_FRAUD = {**{c: 1 for c in VELOCITY}, "ip_card_mismatch": 1, "card_shipping_mismatch": 1,
                  "ip_shipping_mismatch": 1, "new_account": 1}
MONOTONE_COMPLIANCE = {"hs_category_mismatch": 1, "control_keyword_flag": 1, "dangerous_keyword_flag": 1}
READABLE: dict[str, str] = {
    "ip_orders_1h": "many orders from this IP address in the last hour",
    "ip_orders_24h": "many orders from this IP address today",
    "device_orders_1h": "many orders from this device in the last hour",
    "device_orders_24h": "many orders from this device today",
    "buyer_orders_1h": "many orders from this buyer in the last hour",
    "buyer_orders_24h": "many orders from this buyer today",
    "ip_card_mismatch": "IP country differs from card country",
    "card_shipping_mismatch": "card country differs from shipping country",
    "ip_shipping_mismatch": "IP country differs from shipping country",
    "new_account": "account created in the last week",
    "account_age_days": "young buyer account",
    "amount_vs_merchant_z": "amount unusual for this merchant",
    "amount_vs_merchant_p95": "amount above the merchant's usual range",
    "amount_vs_buyer_mean": "amount unusual for this buyer",
    "amount_vs_category_median": "amount unusual for the category",
    "declared_to_amount": "declared customs value low against the amount paid",
    "declared_ratio_vs_category": "declared value low for the category (possible undervaluation)",
    "hs_category_mismatch": "HS code does not fit the product category",
    "control_keyword_flag": "description mentions export-controlled goods",
    "dangerous_keyword_flag": "description mentions dangerous goods",
    "merchant_chargeback_rate_180d": "merchant with a high chargeback rate",
    "merchant_compliance_rate_180d": "merchant with past customs issues",
    "merchant_hs_mismatch_rate_91d": "merchant often declares mismatching HS codes",
    "merchant_late_rate_91d": "merchant with poor fulfilment history",
    "merchant_credit_grade": "merchant credit grade",
    "buyer_chargebacks_known": "buyer with earlier chargebacks",
    "device_chargebacks_known": "device linked to earlier chargebacks",
    "ip_chargebacks_known": "IP address linked to earlier chargebacks",
}


def readable(feature: str, overrides: dict[str, str] | None = None) -> str:
    """Readable reason for a feature name (config overrides first)."""
    if overrides and feature in overrides:
        return overrides[feature]
    return READABLE.get(feature, feature.replace("_", " "))


def prepare_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Add derived request columns (order hour, account age, on-demand features) when absent."""
    from features.on_demand import ON_DEMAND_OUTPUTS, risk_request_features

    out = frame.copy()
    if "ordered_at" not in out:
        raise TradecastError("risk model input is missing column 'ordered_at'")
    ordered = pd.to_datetime(out["ordered_at"])
    if getattr(ordered.dt, "tz", None) is not None:
        ordered = ordered.dt.tz_convert("UTC").dt.tz_localize(None)
    out["order_hour"] = ordered.dt.hour.astype("float64").to_numpy()  # derived, never trusted from the caller
    if "account_age_days" not in out and "account_created_at" in out:
        out["account_age_days"] = ((ordered - pd.to_datetime(out["account_created_at"])) / pd.Timedelta(days=1))
    if "order_category" not in out and "category" in out:
        out["order_category"] = out["category"]
    missing = [c for c in ON_DEMAND_OUTPUTS["risk_request"] if c not in out]
    if missing:
        extra = risk_request_features(out)
        for c in missing:
            out[c] = extra[c]
    return out


def risk_levels(p_fraud: np.ndarray, p_compliance: np.ndarray, levels: dict[str, float]) -> np.ndarray:
    """low / medium / high / critical from the larger probability and the configured lower bounds."""
    p = np.maximum(np.asarray(p_fraud), np.asarray(p_compliance))
    return np.select([p >= levels["critical"], p >= levels["high"], p >= levels["medium"]],
                     ["critical", "high", "medium"], "low")


def reason_codes(contributions: list[pd.DataFrame], top: int, overrides: dict[str, str] | None = None,
                 min_contribution: float = 0.05) -> list[str]:
    """Per row: the `top` features pushing risk up the most (summed over models), '; '-separated, readable."""
    total = contributions[0].copy()
    for extra in contributions[1:]:
        total = total.add(extra, fill_value=0.0)
    return _top_reasons(total.to_numpy(), list(total.columns), top, overrides, min_contribution)


def _top_reasons(values: np.ndarray, columns: list[str], top: int, overrides: dict[str, str] | None,
                 min_contribution: float) -> list[str]:
    names = np.array([readable(c, overrides) for c in columns], dtype=object)
    order = np.argsort(-values, axis=1)[:, :top]
    picked = np.take_along_axis(values, order, axis=1)
    out = []
    for idx, val in zip(order, picked):  # only `top` entries per row
        out.append("; ".join(names[i] for i, v in zip(idx, val) if v > min_contribution))
    return out


def predict_outputs(model: TradecastModel, frame: pd.DataFrame) -> pd.DataFrame:
    """p_fraud, p_compliance, risk_level and reason_codes for each order."""
    from training.estimators import EncodedFrame, LGBMCalibratedClassifier

    x = prepare_features(frame)
    fraud, compliance = model.estimators["fraud"], model.estimators["compliance"]
    # LightGBM estimators share one model matrix for their four calls (probabilities and contributions)
    xs = EncodedFrame(x) if all(isinstance(e, LGBMCalibratedClassifier) for e in (fraud, compliance)) else x
    p_fraud = fraud.predict_proba(xs)[:, 1]
    p_comp = compliance.predict_proba(xs)[:, 1]
    contribs = [e.contributions(xs) for e in (fraud, compliance) if hasattr(e, "contributions")]
    reasons = reason_codes(contribs, model.spec.get("reason_codes", 3), model.spec.get("reason_names")) \
        if contribs else [""] * len(x)
    return pd.DataFrame({"p_fraud": p_fraud, "p_compliance": p_comp,
                         "risk_level": risk_levels(p_fraud, p_comp, model.spec["levels"]),
                         "reason_codes": reasons}, index=frame.index)


def supports_columns(model: TradecastModel) -> bool:
    """Whether `predict_output_columns` can answer for this model (both classifiers LightGBM)."""
    from training.estimators import LGBMCalibratedClassifier

    return all(isinstance(model.estimators[k], LGBMCalibratedClassifier) for k in ("fraud", "compliance"))


def predict_output_columns(model: TradecastModel, columns: dict[str, Any]) -> dict[str, Any]:
    """`predict_outputs` for the request path: column -> values in, column -> array out, no DataFrame.

    Needs what serving passes (request fields, account_age_days, order_category and the risk_v1 features,
    on-demand ones included; missing on-demand features are computed by the same function) and LightGBM
    classifiers (`supports_columns`). Same numbers as `predict_outputs` (tested)."""
    from features.on_demand import ON_DEMAND_OUTPUTS, risk_request_features
    from training.estimators import EncodedFrame

    if "ordered_at" not in columns:
        raise TradecastError("risk model input is missing column 'ordered_at'")
    x = dict(columns)
    ordered = np.asarray(x["ordered_at"], dtype="datetime64[ns]")  # naive UTC
    x["order_hour"] = (ordered.astype("datetime64[h]").astype(np.int64) % 24).astype("float64")
    if "account_age_days" not in x and "account_created_at" in x:
        created = np.asarray(x["account_created_at"], dtype="datetime64[ns]")
        x["account_age_days"] = (ordered - created) / np.timedelta64(1, "D")
    if "order_category" not in x and "category" in x:
        x["order_category"] = x["category"]
    if any(c not in x for c in ON_DEMAND_OUTPUTS["risk_request"]):
        x = {**risk_request_features(x), **x}
    fraud, compliance = model.estimators["fraud"], model.estimators["compliance"]
    xs = EncodedFrame(x)
    top, names = model.spec.get("reason_codes", 3), model.spec.get("reason_names")
    if fraud.columns_ == compliance.columns_:
        # one LightGBM call per classifier: probabilities and contributions from the same leaf indices
        p_fraud, c_fraud = fraud.proba_and_contributions(xs)
        p_comp, c_comp = compliance.proba_and_contributions(xs)
        reasons = _top_reasons(c_fraud + c_comp, fraud.columns_, top, names, 0.05)
    else:  # different inputs: align by name as reason_codes does
        p_fraud = fraud.predict_proba(xs)[:, 1]
        p_comp = compliance.predict_proba(xs)[:, 1]
        reasons = reason_codes([e.contributions(xs) for e in (fraud, compliance)], top, names)
    return {"p_fraud": p_fraud, "p_compliance": p_comp,
            "risk_level": risk_levels(p_fraud, p_comp, model.spec["levels"]), "reason_codes": reasons}


@dataclass
class RiskFamily:
    """The risk family for the shared pipeline."""

    config: RiskConfig
    name: str = "risk"
    baseline_candidates: tuple[str, ...] = ("rules",)

    @property
    def model_candidates(self) -> tuple[str, ...]:
        return ("lightgbm", "pytorch") if self.config.challenger.enabled else ("lightgbm",)

    def build_training_set(self, progress: Progress) -> TrainingSet:
        from features import store
        from features.offline import read_table
        from features.schema import FRAUD_LABEL_WINDOW_DAYS

        orders = read_table("orders")
        window = pd.Timedelta(days=FRAUD_LABEL_WINDOW_DAYS)
        entity = store.risk_entities(orders, label="fraud")
        end = pd.to_datetime(orders["ordered_at"]).max()
        ordered = pd.to_datetime(entity["ordered_at"])
        entity = entity[ordered + window <= end].reset_index(drop=True)  # both labels final
        entity = entity.rename(columns={"label": "is_fraud_label"})
        entity["is_fraud_label"] = entity["is_fraud_label"].astype(int)
        comp = entity["is_compliance_issue"].astype("boolean").fillna(False).astype(bool) \
            if "is_compliance_issue" in entity else pd.Series(False, index=entity.index)
        entity["is_compliance_label"] = comp.astype(int)
        if len(entity) > self.config.max_training_rows:
            entity = entity.iloc[-self.config.max_training_rows:].reset_index(drop=True)
        if entity.empty:
            raise TradecastError(f"orders: no order has a closed {FRAUD_LABEL_WINDOW_DAYS}-day label window yet")
        progress(f"{len(entity):,} orders with closed label windows; joining point-in-time risk features")
        frame = join_features(entity, self.config.feature_join)
        names = [n for n in store.feature_names(SERVICE) if n in frame.columns]
        categorical = [c for c in CATEGORICAL if c in frame.columns]
        numeric = [n for n in names if n not in categorical and pd.api.types.is_numeric_dtype(frame[n])]
        numeric += [c for c in REQUEST_NUMERIC if c in frame.columns and c not in numeric]
        ordered = pd.to_datetime(frame["ordered_at"])
        meta = {"first_day": str(ordered.min().date()), "last_day": str(end.date()),
                "fraud_rate": round(float(frame["is_fraud_label"].mean()), 5),
                "compliance_rate": round(float(frame["is_compliance_label"].mean()), 5)}
        return TrainingSet(frame=frame, event_time=ordered, label_time=ordered + window, numeric=numeric,
                           categorical=categorical, request_columns=REQUEST_COLUMNS,
                           store_features=store.feature_names(SERVICE), meta=meta)

    def folds(self, ts: TrainingSet) -> list[Fold]:
        bt = self.config.backtest
        cutoffs = rolling_cutoffs(ts.event_time.max() + pd.Timedelta(days=1), bt.folds,
                                  pd.Timedelta(days=bt.step_days), pd.Timedelta(days=bt.test_days))
        return rolling_origin_folds(ts.event_time, ts.label_time, cutoffs, pd.Timedelta(days=bt.test_days),
                                    min_train=50)

    def _lgbm(self, ts: TrainingSet, monotone: dict[str, int]):
        from training.distributed import DaskLGBMCalibratedClassifier, active_client
        from training.estimators import LGBMCalibratedClassifier, lgbm_params

        # booster trained on a Dask cluster when the pipeline runs inside training.distributed.training_cluster()
        cls = DaskLGBMCalibratedClassifier if active_client() is not None else LGBMCalibratedClassifier
        return cls(numeric=ts.numeric, categorical=ts.categorical, params=lgbm_params(self.config.lightgbm),
                   calibration_share=self.config.calibration_share,
                   monotone={k: v for k, v in monotone.items() if k in ts.numeric})

    def _estimators(self, ts: TrainingSet, candidate: str) -> dict[str, Any]:
        fraud = self._torch(ts) if candidate == "pytorch" else self._lgbm(ts, MONOTONE_FRAUD)
        return {"fraud": fraud, "compliance": self._lgbm(ts, MONOTONE_COMPLIANCE)}

    def _torch(self, ts: TrainingSet):
        from training.torch_models import TorchClassifier

        c = self.config.challenger
        return TorchClassifier(numeric=ts.numeric, categorical=ts.categorical, hidden=tuple(c.hidden),
                               embedding_dim=c.embedding_dim, epochs=c.epochs, batch_size=c.batch_size,
                               learning_rate=c.learning_rate, weight_decay=c.weight_decay, threads=c.threads,
                               seed=c.seed)

    @staticmethod
    def _fit(estimators: dict[str, Any], train: pd.DataFrame) -> dict[str, Any]:
        t = pd.to_datetime(train["ordered_at"])
        estimators["fraud"].fit(train, train["is_fraud_label"], sample_time=t)
        estimators["compliance"].fit(train, train["is_compliance_label"], sample_time=t)
        return estimators

    def _model(self, estimators: dict[str, Any], ts: TrainingSet, candidate: str) -> TradecastModel:
        from training.distributed import DaskLGBMCalibratedClassifier

        # packaged without Dask: a Dask-trained classifier becomes the plain LGBMCalibratedClassifier it equals
        estimators = {k: v.to_local() if isinstance(v, DaskLGBMCalibratedClassifier) else v
                      for k, v in estimators.items()}
        spec = {"input_columns": ts.input_columns, "output_columns": OUTPUTS, "numeric": ts.numeric,
                "categorical": ts.categorical, "levels": self.config.levels.model_dump(),
                "reason_codes": self.config.reason_codes, "reason_names": dict(self.config.reason_names),
                "estimator": candidate, "feature_service": SERVICE, "false_alarm_rate": self.config.false_alarm_rate}
        return TradecastModel("risk", estimators, spec)

    def candidates(self, ts: TrainingSet) -> dict[str, FitPredict]:
        def model_candidate(name: str) -> FitPredict:
            def fit_predict(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
                est = self._fit(self._estimators(ts, name), train)
                return pd.DataFrame({"p_fraud": est["fraud"].predict_proba(test)[:, 1],
                                     "p_compliance": est["compliance"].predict_proba(test)[:, 1]})
            return fit_predict

        out = {name: model_candidate(name) for name in self.model_candidates}
        out["rules"] = self._rules
        return out

    def _rules(self, train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
        """Rules scores, mapped to probabilities by a logistic fit on the training rows (ranking unchanged)."""
        from training.estimators import _apply_platt, _fit_platt

        out = {}
        for label, scorer in (("p_fraud", self._fraud_rules), ("p_compliance", compliance_rules_score)):
            target = train["is_fraud_label" if label == "p_fraud" else "is_compliance_label"].to_numpy()
            s_train, s_test = scorer(train), scorer(test)
            if len(np.unique(target)) < 2:
                out[label] = np.full(len(test), float(target.mean()) if len(target) else 0.0)
                continue
            out[label] = _apply_platt(_fit_platt(s_train, target), s_test)
        return pd.DataFrame(out)

    def _fraud_rules(self, frame: pd.DataFrame) -> np.ndarray:
        return rules_risk_score(frame, [c for c in ("ip_orders_1h", "device_orders_1h", "buyer_orders_1h")
                                        if c in frame], self.config.new_account_days)

    def refit_from_model(self, model: TradecastModel, ts: TrainingSet) -> FitPredict:
        from sklearn.base import clone

        def fit_predict(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
            est = self._fit({k: clone(v) for k, v in model.estimators.items()}, train)
            return pd.DataFrame({"p_fraud": est["fraud"].predict_proba(test)[:, 1],
                                 "p_compliance": est["compliance"].predict_proba(test)[:, 1]})
        return fit_predict

    def score(self, rows: pd.DataFrame) -> dict[str, float]:
        out: dict[str, float] = {}
        for prefix, label, prob in (("fraud", "is_fraud_label", "p_fraud"),
                                    ("compliance", "is_compliance_label", "p_compliance")):
            m = M.classifier_metrics(rows[label], rows[prob], self.config.false_alarm_rate)
            out.update({f"{prefix}_{k}": v for k, v in m.items()})
        return out

    def breakdown(self, ts: TrainingSet, predictions: pd.DataFrame) -> pd.DataFrame:
        joined = predictions.join(ts.frame[["is_fraud_label", "is_compliance_label", "new_account"]])
        joined["account"] = np.where(joined["new_account"] > 0, "new_account", "established")
        rows = []
        for (cand, group), part in joined.groupby(["candidate", "account"], observed=True):
            m = self.score(part)
            rows.append({"split": "account", "group": group, "candidate": cand,
                         "fraud_recall_at_fa": m["fraud_recall_at_fa"], "fraud_pr_auc": m["fraud_pr_auc"],
                         "n": m["fraud_n"]})
        return pd.DataFrame(rows)

    def sanity(self, table: pd.DataFrame, candidate: str) -> dict[str, bool]:
        from training.pipeline import overall

        m = overall(table, candidate)
        base = overall(table, "rules")
        checks = {
            "finite_metrics": all(np.isfinite(m.get(k, np.nan)) for k in ("fraud_recall_at_fa", "fraud_brier",
                                                                          "compliance_brier")),
            f"fraud_ece_at_most_{self.config.gate.max_ece}": m.get("fraud_ece", 1) <= self.config.gate.max_ece,
            f"compliance_ece_at_most_{self.config.gate.max_ece}":
                m.get("compliance_ece", 1) <= self.config.gate.max_ece,
        }
        if self.config.gate.require_beats_baseline:
            checks["beats_rules"] = m.get("fraud_recall_at_fa", -np.inf) > base.get("fraud_recall_at_fa", np.inf)
        return checks

    def behaviour(self, model: TradecastModel, ts: TrainingSet) -> dict[str, bool]:
        """A burst of orders from one IP address or device never lowers P(fraud)."""
        from training.pipeline import behaviour_rows

        x = behaviour_rows(ts)
        base = model.predict_frame(x)["p_fraud"]
        burst = {c: x[c] + 10 for c in ("ip_orders_1h", "ip_orders_24h", "device_orders_1h", "device_orders_24h")
                 if c in x}
        more = model.predict_frame(x.assign(**burst))["p_fraud"]
        return {"order_burst_never_lowers_fraud_risk": bool((more >= base - 1e-12).all())}

    def fit_final(self, ts: TrainingSet, candidate: str) -> TradecastModel:
        return self._model(self._fit(self._estimators(ts, candidate), ts.frame), ts, candidate)

    def figures(self, ts: TrainingSet, predictions: pd.DataFrame, model: TradecastModel, candidate: str) -> dict[str, Any]:
        joined = predictions.join(ts.frame[["is_fraud_label"]])
        labels = joined.loc[joined["candidate"] == candidate, "is_fraud_label"].to_numpy()
        probs = {c: joined.loc[joined["candidate"] == c, "p_fraud"].to_numpy() for c in (candidate, "rules")}
        figs = {"calibration_fraud": calibration_figure(labels, probs)}
        est = model.estimators["fraud"]
        if hasattr(est, "feature_importances_"):
            figs["feature_importance_fraud"] = feature_importance_figure(est.columns_, est.feature_importances_)
        comp = model.estimators["compliance"]
        figs["feature_importance_compliance"] = feature_importance_figure(comp.columns_, comp.feature_importances_)
        return figs


def join_features(entity: pd.DataFrame, join: str = "asof") -> pd.DataFrame:
    """Point-in-time join of the risk_v1 features at each order's time (features.store.training_frame).

    `account_age_days` is both a request field and an on-demand output of risk_v1, so it travels beside the
    join and the request-time features are recomputed from it (the same pure function serving uses)."""
    from features.on_demand import risk_request_features
    from training.pointintime import training_frame

    age = entity["account_age_days"] if "account_age_days" in entity else None
    frame = training_frame(SERVICE, entity.drop(columns=["account_age_days"], errors="ignore"), join)
    if age is not None:
        derived = risk_request_features(frame.drop(columns=["account_age_days"], errors="ignore")
                                        .assign(account_age_days=age.to_numpy()))
        for c in derived.columns:
            frame[c] = derived[c].to_numpy()
    return prepare_features(frame)


def compliance_rules_score(frame: pd.DataFrame) -> np.ndarray:
    """Customs rules: HS code vs category, control/dangerous keywords, and a low declared value for the category."""
    score = np.zeros(len(frame))
    for col in ("hs_category_mismatch", "control_keyword_flag", "dangerous_keyword_flag"):
        if col in frame:
            score += pd.to_numeric(frame[col], errors="coerce").fillna(0).to_numpy(dtype="float64")
    if "declared_ratio_vs_category" in frame:
        ratio = pd.to_numeric(frame["declared_ratio_vs_category"], errors="coerce").fillna(1.0).to_numpy()
        score += np.clip(1.0 - ratio, 0, 1)  # undervaluation adds up to 1
    return score
