"""LightGBM estimators with the scikit-learn contract: a non-crossing quantile regressor and a calibrated classifier.

Both take a DataFrame with the columns named in `numeric` and `categorical`; categoricals are fixed to the
categories seen in `fit` (unseen values become missing), so inputs in any order or with extra columns work.
`monotone` maps numeric features to +1/-1 constraints: domain knowledge the model must respect
(a customs inspection never shortens transit, a promotion never lowers demand, an IP burst never lowers risk).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from tradecast.errors import TradecastError


def lgbm_params(config: Any | None) -> dict[str, Any]:
    """LightGBM keyword arguments from a LightGBMConfig (or defaults): seeded, deterministic, bounded threads."""
    from training.config import LightGBMConfig

    cfg = config or LightGBMConfig()
    return {
        "n_estimators": cfg.n_estimators,
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_child_samples": cfg.min_child_samples,
        "subsample": cfg.subsample,
        "subsample_freq": cfg.subsample_freq,
        "colsample_bytree": cfg.colsample_bytree,
        "reg_lambda": cfg.reg_lambda,
        "max_bin": cfg.max_bin,
        "n_jobs": cfg.num_threads,
        "random_state": cfg.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbose": -1,
        "monotone_constraints_method": cfg.monotone_method,
    }


def check_columns(X: pd.DataFrame, columns: list[str], what: str = "model") -> None:
    """Raise a clear error naming the missing input columns."""
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise TradecastError(f"{what} input is missing column(s): {', '.join(missing)}")


def fit_categories(X: pd.DataFrame, categorical: list[str]) -> dict[str, list[str]]:
    """Sorted category values of each categorical column, learned at fit time."""
    return {c: sorted(pd.Series(X[c]).dropna().astype(str).unique().tolist()) for c in categorical}


def encode_frame(X: pd.DataFrame, numeric: list[str], categories: dict[str, list[str]]) -> pd.DataFrame:
    """Model matrix: numeric columns as float, categoricals as pandas Categorical with the fitted categories."""
    check_columns(X, list(numeric) + list(categories))
    columns: dict[str, Any] = {c: _numeric_values(X[c]) for c in numeric}
    for c, cats in categories.items():
        columns[c] = pd.Categorical(X[c].astype("string").astype(object).where(X[c].notna(), None), categories=cats)
    return pd.DataFrame(columns, index=X.index)  # one constructor: inserting column by column copies every time


def _numeric_values(col: pd.Series) -> np.ndarray:
    """Column as float64 (non-numbers become NaN), without pandas round trips for plain numpy dtypes."""
    if isinstance(col.dtype, np.dtype) and col.dtype.kind in "fiub":
        return col.to_numpy(dtype="float64")
    return pd.to_numeric(col, errors="coerce").astype("float64").to_numpy()


# below this many rows, categoricals are coded with a dict lookup (pd.Categorical costs ~50 us per column)
SMALL_BATCH = 256


def _category_codes(col: pd.Series, cats: list[str], lookup: dict[str, int]) -> np.ndarray:
    """Codes of the fitted categories as float (NaN: missing or unseen), as LightGBM derives them from encode_frame."""
    if len(col) <= SMALL_BATCH and col.dtype == object:
        values = col.to_numpy()
        if all(isinstance(v, str) or v is None or v is pd.NA or (isinstance(v, float) and v != v) for v in values):
            return np.array([lookup.get(v, np.nan) if isinstance(v, str) else np.nan for v in values], dtype="float64")
    codes = pd.Categorical(col.astype("string").astype(object).where(col.notna(), None), categories=cats).codes
    return np.where(codes < 0, np.nan, codes.astype("float64"))


def encode_matrix(X: "pd.DataFrame | Mapping[str, Any]", numeric: list[str], categories: dict[str, list[str]],
                  lookups: dict[str, dict[str, int]] | None = None) -> np.ndarray:
    """The float64 matrix LightGBM predicts on: numeric columns, then category codes (NaN when missing or unseen).

    Equal to what LightGBM builds from encode_frame's DataFrame, without the DataFrame (one numpy array per call).
    X may also be a mapping of column -> values (the serving request path; the same codes, tested).
    """
    if not isinstance(X, pd.DataFrame):
        return _encode_mapping(X, numeric, categories, lookups)
    check_columns(X, list(numeric) + list(categories))
    out = np.empty((len(X), len(numeric) + len(categories)), dtype="float64")
    block = X[list(numeric)]
    if all(isinstance(d, np.dtype) and d.kind in "fiub" for d in block.dtypes):
        out[:, : len(numeric)] = block.to_numpy(dtype="float64")  # one conversion, not one per column
    else:
        for j, c in enumerate(numeric):
            out[:, j] = _numeric_values(X[c])
    for j, (c, cats) in enumerate(categories.items(), start=len(numeric)):
        lookup = lookups[c] if lookups else {v: i for i, v in enumerate(cats)}
        out[:, j] = _category_codes(X[c], cats, lookup)
    return out


def _encode_mapping(X: Mapping[str, Any], numeric: list[str], categories: dict[str, list[str]],
                    lookups: dict[str, dict[str, int]] | None) -> np.ndarray:
    """encode_matrix for column -> values: numbers as float64 (None and non-numbers NaN), categories through
    the fitted lookup of their text (NaN when missing or unseen), as `_category_codes` codes them."""
    missing = [c for c in list(numeric) + list(categories) if c not in X]
    if missing:
        raise TradecastError(f"model input is missing column(s): {', '.join(missing)}")
    n = len(next(iter(X.values()))) if X else 0
    out = np.empty((n, len(numeric) + len(categories)), dtype="float64")
    for j, c in enumerate(numeric):
        values = np.asarray(X[c])
        if values.dtype.kind in "fiub":
            out[:, j] = values
        else:
            out[:, j] = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(
                dtype="float64", na_value=np.nan)
    for j, (c, cats) in enumerate(categories.items(), start=len(numeric)):
        lookup = lookups[c] if lookups else {v: i for i, v in enumerate(cats)}
        out[:, j] = [np.nan if v is None or v is pd.NA or (isinstance(v, float) and v != v)
                     else lookup.get(v if isinstance(v, str) else str(v), np.nan) for v in X[c]]
    return out


class EncodedFrame:
    """A frame whose model matrix is built once and shared by every LightGBM estimator with the same encoding
    (risk asks two classifiers for probabilities and contributions: four encodings of one frame otherwise)."""

    def __init__(self, frame: "pd.DataFrame | Mapping[str, Any]"):
        self.frame = frame
        self.index = frame.index if isinstance(frame, pd.DataFrame) else None
        self._matrices: dict[tuple, np.ndarray] = {}

    def __len__(self) -> int:
        if isinstance(self.frame, pd.DataFrame):
            return len(self.frame)
        return len(next(iter(self.frame.values()))) if self.frame else 0

    def matrix(self, estimator: Any) -> np.ndarray:
        key = _encoding_key(estimator)
        if key not in self._matrices:
            self._matrices[key] = encode_matrix(self.frame, estimator.numeric_, estimator.categories_,
                                                _category_lookups(estimator))
        return self._matrices[key]


def _encoding_key(estimator: Any) -> tuple:
    key = estimator.__dict__.get("_encoding_key")
    if key is None:  # computed once per fitted estimator (also for ones unpickled from older versions)
        key = (tuple(estimator.numeric_), tuple((c, tuple(v)) for c, v in estimator.categories_.items()))
        estimator.__dict__["_encoding_key"] = key
    return key


def _category_lookups(estimator: Any) -> dict[str, dict[str, int]]:
    lookups = estimator.__dict__.get("_category_lookups")
    if lookups is None:
        lookups = {c: {v: i for i, v in enumerate(cats)} for c, cats in estimator.categories_.items()}
        estimator.__dict__["_category_lookups"] = lookups
    return lookups


def model_matrix(estimator: Any, X: "pd.DataFrame | EncodedFrame") -> np.ndarray:
    """The estimator's float64 model matrix for X (shared when X is an EncodedFrame)."""
    if isinstance(X, EncodedFrame):
        return X.matrix(estimator)
    return encode_matrix(X, estimator.numeric_, estimator.categories_, _category_lookups(estimator))


def booster_predict(model: Any, matrix: np.ndarray, **kwargs: Any) -> np.ndarray:
    """LightGBM booster prediction on a float matrix; one thread for small batches (thread start-up costs more
    than a few rows of trees), the model's configured threads otherwise."""
    n_jobs = getattr(model, "n_jobs", None)
    threads = 1 if len(matrix) <= SMALL_BATCH else (n_jobs if isinstance(n_jobs, int) and n_jobs > 0 else 0)
    return model.booster_.predict(matrix, num_threads=threads, **kwargs)


def _monotone_vector(columns: list[str], monotone: dict[str, int] | None) -> list[int]:
    monotone = monotone or {}
    return [int(monotone.get(c, 0)) for c in columns]


class LGBMQuantileRegressor(RegressorMixin, BaseEstimator):
    """LightGBM quantile forecasts (P10/P50/P90 by default) that never cross.

    The outer quantiles are LightGBM quantile models. The middle one is a quantile model too, unless `monotone`
    constraints are given: LightGBM refuses them for quantile/L1 objectives, so the centre is then an L2 model
    on the (log) target, which keeps the constraints. Predictions are rearranged (sorted) so P10 <= P50 <= P90,
    and with a constrained centre the outer quantiles are widened around it instead, so P50 keeps its monotonicity.
    """

    def __init__(self, numeric: list[str] | None = None, categorical: list[str] | None = None,
                 quantiles: tuple[float, ...] = (0.1, 0.5, 0.9), params: dict[str, Any] | None = None,
                 monotone: dict[str, int] | None = None, log_target: bool = False):
        self.numeric = numeric
        self.categorical = categorical
        self.quantiles = quantiles
        self.params = params
        self.monotone = monotone
        self.log_target = log_target

    def fit(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> "LGBMQuantileRegressor":
        import lightgbm as lgb

        self.numeric_ = list(self.numeric or [])
        self.categories_ = fit_categories(X, list(self.categorical or []))
        self.columns_ = self.numeric_ + list(self.categories_)
        Xm = encode_frame(X, self.numeric_, self.categories_)[self.columns_]
        target = np.asarray(y, dtype="float64")
        if self.log_target:
            target = np.log1p(np.clip(target, 0, None))
        params = dict(self.params or lgbm_params(None))
        method = params.pop("monotone_constraints_method", "intermediate")
        mono = _monotone_vector(self.columns_, self.monotone)
        self.center_ = int(np.argmin(np.abs(np.asarray(self.quantiles, dtype=float) - 0.5)))
        self.constrained_ = any(mono)
        self.models_ = []
        for i, q in enumerate(self.quantiles):
            if i == self.center_ and self.constrained_:
                model = lgb.LGBMRegressor(objective="regression", monotone_constraints=mono,
                                          monotone_constraints_method=method, **params)
            else:
                model = lgb.LGBMRegressor(objective="quantile", alpha=float(q), **params)
            model.fit(Xm, target, sample_weight=sample_weight)
            self.models_.append(model)
        self.feature_importances_ = self.models_[self.center_].booster_.feature_importance("gain")
        return self

    def predict_quantiles(self, X: "pd.DataFrame | EncodedFrame") -> np.ndarray:
        """Array (n, len(quantiles)) of non-crossing quantile predictions."""
        Xm = model_matrix(self, X)
        preds = np.column_stack([booster_predict(m, Xm) for m in self.models_])
        c = self.center_
        if self.constrained_:
            # keep the constrained centre; lower quantiles at most, upper at least the centre
            preds[:, :c] = np.minimum(np.sort(preds[:, :c], axis=1), preds[:, [c]])
            preds[:, c + 1:] = np.maximum(np.sort(preds[:, c + 1:], axis=1), preds[:, [c]])
        else:
            preds = np.sort(preds, axis=1)  # rearrangement: sorted quantile estimates never cross
        if self.log_target:
            preds = np.clip(np.expm1(preds), 0, None)
        return preds

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The middle quantile (P50)."""
        return self.predict_quantiles(X)[:, self.center_]

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per-row feature contributions to the centre model's raw prediction, one column per feature."""
        contrib = booster_predict(self.models_[self.center_], model_matrix(self, X), pred_contrib=True)
        return pd.DataFrame(np.asarray(contrib)[:, : len(self.columns_)], columns=self.columns_, index=X.index)


class LGBMCalibratedClassifier(ClassifierMixin, BaseEstimator):
    """LightGBM binary classifier fitted on the earlier rows, Platt-calibrated on the latest `calibration_share`.

    Rows must be in time order (or `sample_time` given) so calibration uses a later time slice than training.
    Class imbalance: positives are up-weighted by sqrt(neg/pos) (a deliberate middle ground between no weighting
    and full balancing, which over-spends trees on the rare class); calibration then restores true probabilities.
    """

    def __init__(self, numeric: list[str] | None = None, categorical: list[str] | None = None,
                 params: dict[str, Any] | None = None, calibration_share: float = 0.2,
                 monotone: dict[str, int] | None = None, balance: str = "sqrt"):
        self.numeric = numeric
        self.categorical = categorical
        self.params = params
        self.calibration_share = calibration_share
        self.monotone = monotone
        self.balance = balance

    def fit(self, X: pd.DataFrame, y: Any, sample_time: Any = None) -> "LGBMCalibratedClassifier":
        labels = np.asarray(y).astype(int)
        if len(np.unique(labels)) < 2:
            raise TradecastError("classifier training data has a single class; need both positives and negatives")
        order = np.argsort(np.asarray(sample_time), kind="stable") if sample_time is not None else np.arange(len(labels))
        X = X.iloc[order]
        labels = labels[order]
        self.numeric_ = list(self.numeric or [])
        self.categories_ = fit_categories(X, list(self.categorical or []))
        self.columns_ = self.numeric_ + list(self.categories_)
        Xm = encode_frame(X, self.numeric_, self.categories_)[self.columns_]
        n_cal = int(round(len(labels) * self.calibration_share))
        # the calibration slice needs both classes; otherwise calibrate on the training rows (still time-ordered fit)
        cal_labels = labels[len(labels) - n_cal:] if n_cal else labels[:0]
        if n_cal < 20 or len(np.unique(cal_labels)) < 2 or len(np.unique(labels[: len(labels) - n_cal])) < 2:
            n_cal = 0
        fit_idx = slice(0, len(labels) - n_cal)
        pos = max(int(labels[fit_idx].sum()), 1)
        neg = max(int(len(labels[fit_idx]) - labels[fit_idx].sum()), 1)
        params = dict(self.params or lgbm_params(None))
        if self.balance == "sqrt":
            params["scale_pos_weight"] = float(np.sqrt(neg / pos))
        elif self.balance == "full":
            params["scale_pos_weight"] = float(neg / pos)
        mono = _monotone_vector(self.columns_, self.monotone)
        if any(mono):
            params["monotone_constraints"] = mono
        self.model_ = self._fit_booster(Xm.iloc[fit_idx], labels[fit_idx], params)
        cal_X = Xm.iloc[len(labels) - n_cal:] if n_cal else Xm
        cal_y = labels[len(labels) - n_cal:] if n_cal else labels
        raw = self.model_.predict(cal_X, raw_score=True)
        self.calibration_rows_ = int(len(cal_y))
        self.calibrator_ = _fit_platt(raw, cal_y)
        self.classes_ = np.array([0, 1])
        self.feature_importances_ = self.model_.booster_.feature_importance("gain")
        return self

    def _fit_booster(self, X: pd.DataFrame, labels: np.ndarray, params: dict[str, Any]) -> Any:
        """The fitted lightgbm.LGBMClassifier on the encoded training rows (a subclass may train it elsewhere:
        training.distributed.DaskLGBMCalibratedClassifier trains it on Dask)."""
        import lightgbm as lgb

        return lgb.LGBMClassifier(objective="binary", **params).fit(X, labels)

    def predict_proba(self, X: "pd.DataFrame | EncodedFrame") -> np.ndarray:
        raw = booster_predict(self.model_, model_matrix(self, X), raw_score=True)
        p = _apply_platt(self.calibrator_, raw)
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def contributions(self, X: "pd.DataFrame | EncodedFrame") -> pd.DataFrame:
        """Per-row feature contributions to the raw score along each row's decision paths, one column per feature
        (training.contributions: additive like LightGBM's TreeSHAP `pred_contrib`, about 20x cheaper per row,
        which matters for reason codes on the request path). The path table is built on first use."""
        return pd.DataFrame(self.contribution_matrix(X), columns=self.columns_, index=X.index)

    def contribution_matrix(self, X: "pd.DataFrame | EncodedFrame") -> np.ndarray:
        """`contributions` as a (rows, columns_) array."""
        return self._path_contributions(self._leaves(X))

    def proba_and_contributions(self, X: "pd.DataFrame | EncodedFrame") -> tuple[np.ndarray, np.ndarray]:
        """(`predict_proba(X)[:, 1]`, `contribution_matrix(X)`) from one LightGBM call instead of two: the raw
        score is the sum of the rows' leaf values, added tree by tree in LightGBM's own order (a cumulative sum,
        not numpy's pairwise sum), so the probabilities are bit-identical to `predict_proba` (tested). A single
        order's booster call costs more than this sum, and the request path made four of them."""
        leaves = self._leaves(X)
        values = _leaf_values(self)
        n_trees = values.shape[0]
        per_tree = values[np.arange(n_trees)[None, :], leaves[:, :n_trees]]
        raw = np.cumsum(per_tree, axis=1)[:, -1] if n_trees else np.zeros(len(leaves))
        return _apply_platt(self.calibrator_, raw), self._path_contributions(leaves)

    def _leaves(self, X: "pd.DataFrame | EncodedFrame") -> np.ndarray:
        leaves = booster_predict(self.model_, model_matrix(self, X), pred_leaf=True)
        return np.asarray(leaves, dtype=np.int64).reshape(len(leaves), -1)

    def _path_contributions(self, leaves: np.ndarray) -> np.ndarray:
        from training.contributions import PathContributions

        paths = self.__dict__.get("_paths")
        if paths is None:
            paths = PathContributions.from_booster(self.model_.booster_)
            self._paths = paths
        return paths.predict(leaves)[:, : len(self.columns_)]


def _leaf_values(estimator: Any) -> np.ndarray:
    """(trees, max leaves) leaf outputs of a fitted estimator's booster (read once from the C API, exact doubles),
    for the trees `pred_leaf` reports."""
    values = estimator.__dict__.get("_leaf_values")
    if values is None:
        booster = estimator.model_.booster_
        dump = booster.dump_model()["tree_info"]
        values = np.zeros((len(dump), max((int(t["num_leaves"]) for t in dump), default=1)))
        for t, info in enumerate(dump):
            for leaf in range(int(info["num_leaves"])):
                values[t, leaf] = booster.get_leaf_output(t, leaf)
        estimator.__dict__["_leaf_values"] = values
    return values


def _fit_platt(raw: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Logistic calibration p = sigmoid(a * raw + b); the slope is kept positive so ranking never flips."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e4, max_iter=1000)
    lr.fit(np.asarray(raw).reshape(-1, 1), labels)
    a = float(lr.coef_[0, 0])
    b = float(lr.intercept_[0])
    if a <= 1e-6:  # degenerate calibration slice: keep the model's own scale
        a, b = 1.0, 0.0
    return a, b


def _apply_platt(calibrator: tuple[float, float], raw: np.ndarray) -> np.ndarray:
    a, b = calibrator
    return 1.0 / (1.0 + np.exp(-(a * np.asarray(raw, dtype="float64") + b)))
