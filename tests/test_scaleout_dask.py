"""Distributed feature computation and LightGBM training on a Dask LocalCluster of 2 worker processes.

Dask-computed demand features must equal the single-process ones exactly; a Dask-trained demand model must
agree with the single-process model within training.distributed.DEMAND_TOLERANCE on a later holdout.
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
