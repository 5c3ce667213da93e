"""LightGBM and PyTorch estimators: contract, non-crossing quantiles, calibration, monotone constraints, ID invariance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from training.config import LightGBMConfig
from training.estimators import LGBMCalibratedClassifier, LGBMQuantileRegressor, lgbm_params
from training.torch_models import TorchClassifier, TorchQuantileRegressor
from tradecast.errors import TradecastError

SMALL = lgbm_params(LightGBMConfig(n_estimators=40, num_leaves=8, min_child_samples=5))


def _regression(n=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, n)
    promo = rng.integers(0, 2, n).astype(float)
    cat = rng.choice(["a", "b", "c"], n)
    y = np.exp(0.2 * x + 0.8 * promo + (cat == "b") * 0.5) * rng.gamma(4, 0.25, n)
    X = pd.DataFrame({"x": x, "promo": promo, "cat": cat, "sku_id": [f"s{i % 17}" for i in range(n)]})
    return X, y


def test_quantile_regressor_contract_and_non_crossing():
    X, y = _regression()
    est = LGBMQuantileRegressor(numeric=["x", "promo"], categorical=["cat"], params=SMALL, log_target=True)
    assert clone(est).get_params()["numeric"] == ["x", "promo"]
    assert est.fit(X, y) is est
    q = est.predict_quantiles(X)
    assert q.shape == (len(X), 3)
    assert (np.diff(q, axis=1) >= 0).all()
    cover = np.mean((y >= q[:, 0]) & (y <= q[:, 2]))
    assert 0.6 < cover < 0.95
    assert len(est.feature_importances_) == 3
    # unseen category and missing column
    assert np.isfinite(est.predict(X.assign(cat="zzz"))).all()
    with pytest.raises(TradecastError, match="promo"):
        est.predict(X.drop(columns=["promo"]))


def test_monotone_constraint_promo_never_lowers_forecast():
    X, y = _regression()
    est = LGBMQuantileRegressor(numeric=["x", "promo"], categorical=["cat"], params=SMALL, log_target=True,
                                monotone={"promo": 1}).fit(X, y)
    lo = est.predict_quantiles(X.assign(promo=0.0))
    hi = est.predict_quantiles(X.assign(promo=1.0))
    assert (hi >= lo - 1e-9).all()
    assert hi[:, 1].mean() > lo[:, 1].mean() * 1.3


def test_relabelling_ids_changes_nothing():
    X, y = _regression()
    a = LGBMQuantileRegressor(numeric=["x", "promo"], categorical=["cat"], params=SMALL).fit(X, y).predict(X)
    X2 = X.assign(sku_id=X["sku_id"].map(lambda s: "renamed-" + s[::-1]))
    b = LGBMQuantileRegressor(numeric=["x", "promo"], categorical=["cat"], params=SMALL).fit(X2, y).predict(X2)
    np.testing.assert_array_equal(a, b)


def _classification(n=4000, seed=1):
    rng = np.random.default_rng(seed)
    burst = rng.poisson(1.0, n).astype(float)
    mismatch = rng.integers(0, 2, n).astype(float)
    logit = -5 + 0.9 * burst + 1.5 * mismatch
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    X = pd.DataFrame({"burst": burst, "mismatch": mismatch, "noise": rng.normal(size=n),
                      "market": rng.choice(["DE", "US"], n)})
    t = pd.date_range("2024-01-01", periods=n, freq="h")
    return X, y.astype(int), t


def test_calibrated_classifier_is_calibrated_and_monotone():
    X, y, t = _classification()
    est = LGBMCalibratedClassifier(numeric=["burst", "mismatch", "noise"], categorical=["market"], params=SMALL,
                                   monotone={"burst": 1}).fit(X, y, sample_time=t)
    p = est.predict_proba(X)[:, 1]
    assert est.calibration_rows_ == 800
    # calibrated: mean prediction close to the base rate, despite the class weighting during fit
    assert abs(p.mean() - y.mean()) < 0.02
    more = est.predict_proba(X.assign(burst=X["burst"] + 3))[:, 1]
    assert (more >= p - 1e-12).all() and more.mean() > p.mean()
    contrib = est.contributions(X.head(5))
    assert list(contrib.columns) == ["burst", "mismatch", "noise", "market"]
    with pytest.raises(TradecastError, match="single class"):
        clone(est).fit(X, np.zeros(len(X)))


def test_path_contributions_are_additive_and_agree_with_shap():
    """Reason-code contributions (decision paths) add up to the raw score like LightGBM's TreeSHAP values, and
    name the same strongest feature on rows where one feature clearly drives the score."""
    from training.estimators import EncodedFrame

    X, y, t = _classification()
    est = LGBMCalibratedClassifier(numeric=["burst", "mismatch", "noise"], categorical=["market"], params=SMALL).fit(
        X, y, sample_time=t)
    booster = est.model_.booster_
    matrix = EncodedFrame(X).matrix(est)
    paths = est.contributions(X)
    bias = est._paths.bias
    np.testing.assert_allclose(paths.to_numpy().sum(axis=1) + bias, booster.predict(matrix, raw_score=True), atol=1e-9)
    shap = pd.DataFrame(booster.predict(matrix, pred_contrib=True)[:, :4], columns=paths.columns)
    risky = (est.predict_proba(X)[:, 1] > 0.5)
    assert risky.sum() >= 20
    agree = (paths[risky].idxmax(axis=1) == shap[risky].idxmax(axis=1)).mean()
    assert agree >= 0.9, agree
    assert np.corrcoef(paths.to_numpy().ravel(), shap.to_numpy().ravel())[0, 1] > 0.9


def test_torch_quantile_regressor_learns_and_is_seeded():
    X, y = _regression(n=800)
    kw = dict(numeric=["x", "promo"], categorical=["cat"], epochs=15, batch_size=128, hidden=(16,), seed=3)
    a = TorchQuantileRegressor(**kw).fit(X, y)
    q = a.predict_quantiles(X)
    assert (np.diff(q, axis=1) >= 0).all()
    assert a.loss_curve_[-1] < a.loss_curve_[0]
    b = TorchQuantileRegressor(**kw).fit(X, y)
    np.testing.assert_allclose(q, b.predict_quantiles(X))
    # better than predicting the overall median for everyone
    assert np.abs(y - q[:, 1]).mean() < np.abs(y - np.median(y)).mean()


def test_torch_classifier_ranks_risk():
    X, y, t = _classification()
    est = TorchClassifier(numeric=["burst", "mismatch", "noise"], categorical=["market"], epochs=20, hidden=(16,))
    p = est.fit(X, y).predict_proba(X)[:, 1]
    from training.metrics import roc_auc

    assert roc_auc(y, p) > 0.75


def _mixed_inputs(n=400, seed=3):
    """Numeric columns of several dtypes (nullable ints, bools, strings of numbers) and categoricals with
    missing values, so the fast matrix path is compared on the awkward cases too."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "x": rng.normal(size=n),
        "count": pd.array(rng.integers(0, 5, n), dtype="Int64"),
        "flag": rng.integers(0, 2, n).astype(bool),
        "cat": rng.choice(["a", "b", "c", None], n),
        "grade": rng.choice(["A", "B", "C"], n),
    })
    X.loc[::7, "x"] = np.nan
    X.loc[::11, "count"] = pd.NA
    y = ((X["x"].fillna(0) + (X["cat"] == "b") * 1.5 + rng.normal(0, 0.5, n)) > 0.8).astype(int)
    return X, y.to_numpy()


def _reference_raw(model, est, X, **kwargs):
    """The pre-matrix path: LightGBM predicting on encode_frame's DataFrame (pandas categoricals)."""
    from training.estimators import encode_frame

    return model.predict(encode_frame(X, est.numeric_, est.categories_)[est.columns_], **kwargs)


@pytest.mark.parametrize("rows", [1, 3, 400])
def test_matrix_path_equals_dataframe_path(rows):
    from training.estimators import EncodedFrame, _apply_platt

    X, y = _mixed_inputs()
    clf = LGBMCalibratedClassifier(numeric=["x", "count", "flag"], categorical=["cat", "grade"], params=SMALL).fit(X, y)
    reg = LGBMQuantileRegressor(numeric=["x", "count", "flag"], categorical=["cat", "grade"], params=SMALL,
                                monotone={"x": 1}).fit(X, y.astype(float))
    part = X.iloc[:rows].copy()
    part.iloc[0, part.columns.get_loc("grade")] = "unseen"  # unseen category -> missing, as in pandas
    if rows > 1:
        part.iloc[1, part.columns.get_loc("cat")] = np.nan
    expected_p = _apply_platt(clf.calibrator_, _reference_raw(clf.model_, clf, part, raw_score=True))
    from training.contributions import PathContributions

    paths = PathContributions.from_booster(clf.model_.booster_)
    expected_c = paths.predict(_reference_raw(clf.model_, clf, part, pred_leaf=True))[:, :-1]
    shared = EncodedFrame(part)
    for source in (part, shared):
        np.testing.assert_array_equal(clf.predict_proba(source)[:, 1], expected_p)
        np.testing.assert_array_equal(clf.contributions(source).to_numpy(), expected_c)
    centre = reg.models_[reg.center_]
    np.testing.assert_array_equal(reg.contributions(part).to_numpy(),
                                  _reference_raw(centre, reg, part, pred_contrib=True)[:, :-1])
    raw = np.column_stack([_reference_raw(m, reg, part) for m in reg.models_])
    fast = reg.predict_quantiles(part)
    np.testing.assert_array_equal(fast[:, reg.center_], raw[:, reg.center_])
    # category values given as a pandas string column take the general path and agree too
    np.testing.assert_array_equal(clf.predict_proba(part.astype({"cat": "string", "grade": "string"}))[:, 1],
                                  expected_p)
