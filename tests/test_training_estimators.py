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
