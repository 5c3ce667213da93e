"""The merge_asof point-in-time join gives the same training frame as Feast's get_historical_features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training_fixtures import feature_home, train_home  # noqa: F401  (fixtures)


def _compare(service: str, entity: pd.DataFrame) -> None:
    from training.pointintime import training_frame

    fast = training_frame(service, entity, "asof")
    feast = training_frame(service, entity, "feast")
    assert list(fast.columns) == list(feast.columns)
    assert len(fast) == len(entity)
    for col in feast.columns:
        a, b = fast[col], feast[col]
        if pd.api.types.is_numeric_dtype(b) and not pd.api.types.is_bool_dtype(b):
            np.testing.assert_allclose(a.to_numpy(dtype="float64"), b.to_numpy(dtype="float64"), rtol=1e-9,
                                       equal_nan=True, err_msg=col)
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), col


@pytest.mark.slow
def test_asof_join_equals_feast_join(train_home):
    from features import store
    from features.offline import read_table

    shipments = store.delay_entities(read_table("shipments"))
    _compare("delay_v1", shipments.iloc[::40].reset_index(drop=True))
    orders = store.risk_entities(read_table("orders")).drop(columns=["account_age_days"])
    _compare("risk_v1", orders.iloc[::40].reset_index(drop=True))
    sales = read_table("daily_sales")
    demand = store.demand_entities(sales, horizons=(1, 9)).drop(columns=["target_dow"])
    # include as_of days on which a series has no feature row yet and ones older than the TTL
    _compare("demand_v1", demand.iloc[::25].reset_index(drop=True))


def test_asof_join_rejects_bad_entity_frames(train_home):
    from training.pointintime import training_frame
    from tradecast.errors import TradecastError

    with pytest.raises(TradecastError, match="missing column"):
        training_frame("delay_v1", pd.DataFrame({"lane_mode": ["a|air"]}))
    with pytest.raises(TradecastError, match="feature_join"):
        training_frame("delay_v1", pd.DataFrame(), "spark")
