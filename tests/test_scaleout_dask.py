"""Distributed feature computation and LightGBM training on a Dask LocalCluster of 2 worker processes.

Dask-computed demand features must equal the single-process ones exactly, and the risk feature views
(risk_merchant, buyer/device/ip activity) too (activity amounts to rounding); a Dask-trained demand model must
agree with the single-process model within training.distributed.DEMAND_TOLERANCE on a later holdout, and the
Dask-trained risk classifiers (P(fraud), P(compliance)) with the single-process ones within RISK_TOLERANCE.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client():
    from training.distributed import dask_client

    with dask_client(scheduler="", workers=2) as c:
        yield c


@pytest.fixture(scope="module")
def demand_config():
    from training.config import load_family_config

    cfg = load_family_config("demand")
    # smaller than production so the test stays fast; same objectives, constraints and log target
    return cfg.model_copy(update={"lightgbm": cfg.lightgbm.model_copy(update={"n_estimators": 120})})


def test_dask_demand_features_equal_single_process(tiny_tables, client):
    from features.compute import compute_demand_series, load_features_config
    from training.distributed import demand_series_dask

    cfg = load_features_config()
    local = compute_demand_series(tiny_tables["daily_sales"], tiny_tables["skus"], cfg)
    local = local.sort_values(["event_timestamp", "series_id"], kind="mergesort").reset_index(drop=True)
    dask_rows = demand_series_dask(tiny_tables["daily_sales"], tiny_tables["skus"], cfg, client=client, partitions=5)
    pd.testing.assert_frame_equal(local, dask_rows, check_dtype=False)
    assert dask_rows["series_id"].nunique() == local["series_id"].nunique() > 10



def test_dask_risk_features_equal_single_process(tiny_tables, client):
    """risk_merchant and the buyer/device/IP activity views computed over partitions of whole entities on the
    2-process cluster: the same rows as compute_risk_merchant / compute_activity on all orders; values equal
    (activity amounts are differences of running sums: equal to rounding)."""
    from features.compute import ACTIVITY_KEYS, compute_activity, compute_risk_merchant, load_features_config
    from training.distributed import RISK_VIEWS, risk_features_dask

    cfg = load_features_config()
    orders, merchants, shipments = tiny_tables["orders"], tiny_tables["merchants"], tiny_tables["shipments"]
    local = {"risk_merchant": (compute_risk_merchant(orders, merchants, shipments, cfg), "merchant_id")}
    for view, (key, prefix) in ACTIVITY_KEYS.items():
        local[view] = (compute_activity(orders, key, prefix), key)
    dask_views = risk_features_dask(orders, merchants, shipments, cfg, client=client, partitions=4)
    assert set(dask_views) == set(RISK_VIEWS) == set(local)
    for view, (frame, key) in local.items():
        expected = frame.sort_values([key, "event_timestamp"], kind="mergesort").reset_index(drop=True)
        got = dask_views[view]
        assert got[key].nunique() == expected[key].nunique() >= 10, view  # every partition holds several entities
        inexact = [c for c in expected.columns if c.endswith(("_amount_24h", "_amount_mean"))]
        pd.testing.assert_frame_equal(expected.drop(columns=inexact), got.drop(columns=inexact), check_dtype=False,
                                      check_exact=True, obj=view)
        pd.testing.assert_frame_equal(expected[inexact], got[inexact], check_exact=False, rtol=1e-9, atol=1e-6,
                                      obj=view)
    # every merchant's rows run to the end of all orders (the global day grid), not of its partition's orders
    last = dask_views["risk_merchant"].groupby("merchant_id")["event_timestamp"].max()
    assert last.nunique() == 1

def test_dask_trained_demand_model_within_tolerance(tiny_tables, client, demand_config):
    from training.distributed import (DEMAND_TOLERANCE, agreement, demand_training_frame, fit_demand,
                                      within_tolerance)
    from training.estimators import LGBMQuantileRegressor

    frame, numeric, categorical = demand_training_frame(tiny_tables["daily_sales"], tiny_tables["skus"],
                                                        demand_config, client=client)
    cut = frame["as_of"].quantile(0.8)
    train, test = frame[frame["as_of"] < cut], frame[frame["as_of"] >= cut]
    assert len(test) > 500
    local = fit_demand(train, numeric, categorical, demand_config)
    dist = fit_demand(train, numeric, categorical, demand_config, client=client)
    assert type(dist) is LGBMQuantileRegressor  # packaged and served like the local model: no Dask inside
    pickle.loads(pickle.dumps(dist))
    result = agreement(local, dist, test, test["units"])
    print("dask vs local on the holdout:", {k: round(v, 4) for k, v in result.items()})
    assert within_tolerance(result), (result, DEMAND_TOLERANCE)
    # both are real forecasts, not constants: well above zero accuracy and quantiles in order
    assert result["accuracy_local"] > 0.3 and result["accuracy_dask"] > 0.3
    q = dist.predict_quantiles(test)
    assert np.all(q[:, 0] <= q[:, 1]) and np.all(q[:, 1] <= q[:, 2])
    # the distributed models really were trained on 2 machines' worth of data parts
    assert dist.models_[0].booster_.num_trees() > 0


def test_dask_client_errors_are_clear(monkeypatch):
    from training.distributed import dask_client, local_workers
    from tradecast.errors import TradecastError

    monkeypatch.setenv("TRADECAST_DASK_WORKERS", "many")
    with pytest.raises(TradecastError, match="TRADECAST_DASK_WORKERS: 'many'"):
        local_workers()
    with pytest.raises(TradecastError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        with dask_client(scheduler="tcp://127.0.0.1:9", timeout_s=2):
            pass


def test_demand_pipeline_trains_on_the_cluster_named_by_dask_scheduler(tiny_tables, client, demand_config,
                                                                       monkeypatch):
    """The switch as the pipeline sees it: DASK_SCHEDULER (here: the running test cluster) -> training_cluster()
    -> the demand family's LightGBM candidate is the lightgbm.dask estimator; without it, the local one."""
    from types import SimpleNamespace

    from training.demand import DemandFamily
    from training.distributed import (DaskLGBMQuantileRegressor, agreement, demand_training_frame, fit_demand,
                                      training_cluster, within_tolerance)
    from training.estimators import LGBMQuantileRegressor

    frame, numeric, categorical = demand_training_frame(tiny_tables["daily_sales"], tiny_tables["skus"], demand_config)
    cut = frame["as_of"].quantile(0.8)
    train, test = frame[frame["as_of"] < cut], frame[frame["as_of"] >= cut]
    family, ts = DemandFamily(demand_config), SimpleNamespace(numeric=numeric, categorical=categorical)

    monkeypatch.delenv("TRADECAST_DASK", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER", raising=False)
    with training_cluster() as none:
        assert none is None and type(family._lightgbm(ts)) is LGBMQuantileRegressor

    monkeypatch.setenv("DASK_SCHEDULER", client.scheduler.address)
    with training_cluster() as cluster:
        assert cluster is not None and cluster.scheduler.address == client.scheduler.address
        est = family._lightgbm(ts)
        assert isinstance(est, DaskLGBMQuantileRegressor)
        est.fit(train, train["units"])
    restored = pickle.loads(pickle.dumps(est))  # packaged without the client; predicts in-process
    local = fit_demand(train, numeric, categorical, demand_config)
    assert within_tolerance(agreement(local, restored, test, test["units"]))


# ----------------------------------------------------------------------------- risk

RISK_NUMERIC = ["ip_orders_1h", "device_orders_1h", "buyer_orders_1h", "ip_orders_24h", "device_orders_24h",
                "ip_card_mismatch", "card_shipping_mismatch", "new_account", "amount_vs_merchant_z", "amount",
                "declared_ratio_vs_category", "hs_category_mismatch", "control_keyword_flag",
                "merchant_chargeback_rate_180d"]
RISK_CATEGORICAL = ["market", "payment_method", "merchant_credit_grade"]


def _risk_orders(n: int = 40000, seed: int = 11) -> pd.DataFrame:
    """Seeded orders with the risk family's feature names, fraud ~3% (bursts, country mismatches, new accounts,
    unusual amounts, weak merchants) and compliance issues ~4% (HS mismatch, control keywords, undervaluation)."""
    rng = np.random.default_rng(seed)
    grade = rng.choice(list("ABCDE"), n, p=[0.3, 0.3, 0.2, 0.12, 0.08])
    burst = rng.random(n) < 0.04
    ip_1h = rng.poisson(0.3, n) + burst * rng.poisson(6, n)
    frame = pd.DataFrame({
        "order_id": [f"o{i}" for i in range(n)],
        "ordered_at": pd.Timestamp("2025-01-01") + pd.to_timedelta(np.sort(rng.uniform(0, 180, n)), unit="D"),
        "ip_orders_1h": ip_1h.astype(float), "device_orders_1h": (ip_1h * rng.uniform(0.5, 1, n)).round(),
        "buyer_orders_1h": rng.poisson(0.2, n).astype(float), "ip_orders_24h": (ip_1h + rng.poisson(2, n)).astype(float),
        "device_orders_24h": rng.poisson(1.5, n).astype(float),
        "ip_card_mismatch": (rng.random(n) < 0.08).astype(float),
        "card_shipping_mismatch": (rng.random(n) < 0.05).astype(float),
        "new_account": (rng.random(n) < 0.15).astype(float), "amount_vs_merchant_z": rng.normal(0, 1, n),
        "amount": rng.lognormal(3.5, 0.8, n), "declared_ratio_vs_category": np.clip(rng.normal(1, 0.25, n), 0.05, 3),
        "hs_category_mismatch": (rng.random(n) < 0.05).astype(float),
        "control_keyword_flag": (rng.random(n) < 0.02).astype(float),
        "merchant_chargeback_rate_180d": rng.beta(1, 60, n),
        "market": rng.choice(["US", "DE", "SG", "AE", "BR"], n), "payment_method": rng.choice(["card", "wallet", "cod"], n),
        "merchant_credit_grade": grade,
    })
    frame.loc[rng.random(n) < 0.05, "amount_vs_merchant_z"] = np.nan  # missing values take LightGBM's missing branch
    z = frame["amount_vs_merchant_z"].fillna(0).to_numpy()
    fraud = (-5.2 + 0.45 * np.minimum(ip_1h, 8) + 1.3 * frame["ip_card_mismatch"] + 0.9 * frame["card_shipping_mismatch"]
             + 1.1 * frame["new_account"] + 0.6 * np.clip(z, 0, None) + 25 * frame["merchant_chargeback_rate_180d"]
             + 0.4 * (grade >= "D") + 0.5 * (frame["payment_method"] == "card"))
    comp = (-4.6 + 2.2 * frame["hs_category_mismatch"] + 2.0 * frame["control_keyword_flag"]
            + 2.5 * np.clip(0.8 - frame["declared_ratio_vs_category"], 0, None) * 4 + 0.4 * (frame["market"] == "AE"))
    frame["is_fraud_label"] = (rng.random(n) < 1 / (1 + np.exp(-fraud))).astype(int)
    frame["is_compliance_label"] = (rng.random(n) < 1 / (1 + np.exp(-comp))).astype(int)
    return frame


@pytest.fixture(scope="module")
def risk_config():
    from training.config import load_family_config

    return load_family_config("risk")  # the production settings: 200 trees, sqrt class weights, the configured calibration share


@pytest.fixture(scope="module")
def risk_split():
    frame = _risk_orders()
    cut = frame["ordered_at"].quantile(0.8)
    return frame[frame["ordered_at"] < cut].reset_index(drop=True), frame[frame["ordered_at"] >= cut].reset_index(drop=True)


def test_dask_trained_risk_classifiers_within_tolerance(client, risk_config, risk_split):
    from training.distributed import RISK_LABELS, RISK_TOLERANCE, fit_risk, risk_agreement, risk_within_tolerance
    from training.estimators import LGBMCalibratedClassifier

    train, test = risk_split
    for label in RISK_LABELS:
        assert 0.01 < train[label].mean() < 0.06 and test[label].sum() >= 200  # rare, yet enough holdout positives
        local = fit_risk(train, label, RISK_NUMERIC, RISK_CATEGORICAL, risk_config)
        dist = fit_risk(train, label, RISK_NUMERIC, RISK_CATEGORICAL, risk_config, client=client)
        assert type(dist) is LGBMCalibratedClassifier  # packaged and served like the local model: no Dask inside
        restored = pickle.loads(pickle.dumps(dist))
        # same imbalance handling and calibration slice as the local fit
        assert restored.model_.get_params()["scale_pos_weight"] == local.model_.get_params()["scale_pos_weight"] > 1
        assert restored.calibration_rows_ == local.calibration_rows_ == round(risk_config.calibration_share * len(train))
        result = risk_agreement(local, restored, test, test[label], risk_config.false_alarm_rate)
        print(f"{label}: dask vs local on the holdout:", {k: round(v, 4) for k, v in result.items()})
        assert risk_within_tolerance(result), (label, result, RISK_TOLERANCE)
        # both learned the pattern (far above the positive rate) and stay calibrated
        assert result["pr_auc_local"] > 3 * test[label].mean() and result["pr_auc_dask"] > 3 * test[label].mean()
        p = restored.predict_proba(test)[:, 1]
        assert abs(p.mean() - test[label].mean()) < 0.01


def test_risk_pipeline_trains_on_the_cluster_named_by_dask_scheduler(client, risk_config, risk_split, monkeypatch):
    """DASK_SCHEDULER -> training_cluster() -> the risk family's LightGBM classifiers train their boosters through
    lightgbm.dask; the packaged model holds plain LGBMCalibratedClassifiers; without it, everything is local."""
    from training.distributed import DaskLGBMCalibratedClassifier, risk_agreement, risk_within_tolerance, training_cluster
    from training.estimators import LGBMCalibratedClassifier
    from training.pipeline import TrainingSet
    from training.risk import RiskFamily

    train, test = risk_split
    t = pd.to_datetime(train["ordered_at"])
    ts = TrainingSet(frame=train, event_time=t, label_time=t, numeric=RISK_NUMERIC, categorical=RISK_CATEGORICAL,
                     request_columns=["order_id", "ordered_at", "amount", "market", "payment_method"],
                     store_features=RISK_NUMERIC + RISK_CATEGORICAL)
    family = RiskFamily(risk_config)

    monkeypatch.delenv("TRADECAST_DASK", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER", raising=False)
    with training_cluster() as none:
        assert none is None
        local = family._fit(family._estimators(ts, "lightgbm"), train)
    assert all(type(e) is LGBMCalibratedClassifier for e in local.values())

    monkeypatch.setenv("DASK_SCHEDULER", client.scheduler.address)
    with training_cluster() as cluster:
        assert cluster is not None and cluster.scheduler.address == client.scheduler.address
        est = family._fit(family._estimators(ts, "lightgbm"), train)
        assert all(isinstance(e, DaskLGBMCalibratedClassifier) for e in est.values())
        assert all(e.dask_workers_ == 2 for e in est.values())  # the boosters really were trained on the 2 workers
        model = family._model(est, ts, "lightgbm")
    assert all(type(e) is LGBMCalibratedClassifier for e in model.estimators.values())
    restored = pickle.loads(pickle.dumps(model))  # what MLflow logs: no client, no Dask class inside
    for name, label in (("fraud", "is_fraud_label"), ("compliance", "is_compliance_label")):
        result = risk_agreement(local[name], restored.estimators[name], test, test[label])
        assert risk_within_tolerance(result), (name, result)


def test_compute_features_runs_the_entity_views_on_the_cluster(tiny_tables, client, tmp_path, monkeypatch):
    """With a Dask scheduler configured, `compute_features` (what `tradecast features compute/apply` and the
    retrain run) computes demand_series and the risk views on the cluster; the written sources hold the same
    rows as the single-process computation."""
    from features.compute import compute_features, compute_view_frames, load_features_config

    monkeypatch.setenv("TRADECAST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DASK_SCHEDULER", client.scheduler.address)
    messages: list[str] = []
    written = compute_features(tables=tiny_tables, progress=messages.append)
    assert any("on Dask (2 workers)" in m for m in messages)
    local = compute_view_frames(tiny_tables, load_features_config())
    assert set(written) == set(local)
    keys = {"demand_series": ["series_id", "event_timestamp"], "risk_merchant": ["merchant_id", "event_timestamp"],
            "buyer_activity": ["buyer_id", "event_timestamp"], "device_activity": ["device_id", "event_timestamp"],
            "ip_activity": ["ip", "event_timestamp"]}
    for view, key in keys.items():
        stored = pd.read_parquet(tmp_path / "home" / "features" / f"{view}.parquet")
        expected = local[view]
        assert len(stored) == len(expected) == written[view], view
        order = key + [c for c in ("market",) if c in expected.columns and c not in key]
        a = expected.sort_values(order, kind="mergesort").reset_index(drop=True)
        b = stored.sort_values(order, kind="mergesort").reset_index(drop=True)[a.columns]
        pd.testing.assert_frame_equal(a, b, check_dtype=False, check_exact=False, rtol=1e-9, atol=1e-6, obj=view)
