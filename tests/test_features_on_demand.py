"""Request-time features (features/on_demand.py): pure DataFrame -> DataFrame functions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.on_demand import (
    ON_DEMAND_FUNCTIONS,
    ON_DEMAND_INPUTS,
    ON_DEMAND_OUTPUTS,
    calendar_columns,
    delay_request_features,
    demand_request_features,
    hs_category_mismatch,
    keyword_flag,
    risk_request_features,
    CONTROL_KEYWORDS,
)


def test_delay_request_features_compare_to_lane_and_category_norms():
    df = pd.DataFrame({"promised_days": [10.0, 5.0, np.nan], "weight_kg": [2.0, 0.0, 1.0],
                       "declared_value": [100.0, 10.0, 5.0], "lane_transit_p90_28d": [8.0, 10.0, 4.0],
                       "lane_transit_median_28d": [6.0, 4.0, 3.0], "cat_value_per_kg_median_91d": [25.0, 10.0, np.nan]},
                      index=[7, 8, 9])
    out = delay_request_features(df)
    assert list(out.columns) == ON_DEMAND_OUTPUTS["delay_request"]
    assert list(out.index) == [7, 8, 9]
    assert out.loc[7, "promised_vs_lane_p90"] == pytest.approx(1.25)
    assert out.loc[7, "promised_minus_lane_median"] == pytest.approx(4.0)
    assert out.loc[7, "value_per_kg"] == pytest.approx(50.0)
    assert out.loc[7, "value_per_kg_vs_category"] == pytest.approx(2.0)
    assert np.isnan(out.loc[8, "value_per_kg"])  # zero weight: no ratio, no exception
    assert np.isnan(out.loc[9, "promised_vs_lane_p90"]) and np.isnan(out.loc[9, "value_per_kg_vs_category"])


def test_demand_request_features_use_the_target_day_and_history():
    row = {"price": 10.0, "discount": 0.2, "live_sessions": 2.0, "is_promotion": 1.0, "target_dow": 3.0,
           "price_median_28d": 10.0, "promo_lift": 3.0, "live_lift": 5.0, "units_mean_28d": 4.0,
           **{f"dow_index_{d}": 1.0 + d / 10 for d in range(7)}}
    out = demand_request_features(pd.DataFrame([row, {**row, "is_promotion": 0.0, "live_sessions": 0.0, "target_dow": np.nan}]))
    assert out.loc[0, "target_price_ratio"] == pytest.approx(0.8)
    assert out.loc[0, "expected_promo_lift"] == pytest.approx(3.0)
    assert out.loc[0, "expected_live_lift"] == pytest.approx(5.0)
    assert out.loc[0, "target_dow_factor"] == pytest.approx(1.3)
    assert out.loc[0, "baseline_units"] == pytest.approx(5.2)
    assert out.loc[1, "expected_promo_lift"] == 1.0 and out.loc[1, "expected_live_lift"] == 1.0
    assert np.isnan(out.loc[1, "target_dow_factor"]) and out.loc[1, "baseline_units"] == pytest.approx(4.0)


def test_risk_request_features_flags_and_ratios():
    df = pd.DataFrame({
        "amount": [100.0, 20.0], "declared_value": [10.0, 20.0], "account_age_days": [1.0, 400.0],
        "hs_code": ["490199", "950300"], "order_category": ["electronics_3c", "toys"],
        "item_description": ["Power  Bank 20000mAh", "plastic toy"],
        "ip_country": ["CN", "DE"], "card_country": ["US", "DE"], "shipping_country": ["US", None],
        "merchant_amount_mean_91d": [40.0, 20.0], "merchant_amount_std_91d": [20.0, 0.5],
        "merchant_amount_p95_91d": [80.0, 40.0], "buyer_amount_mean": [50.0, np.nan],
        "cat_amount_median_91d": [50.0, 10.0], "cat_declared_ratio_median_91d": [0.8, 1.0],
    })
    out = risk_request_features(df)
    assert list(out.columns) == ON_DEMAND_OUTPUTS["risk_request"]
    assert all(out[c].dtype == np.float64 for c in out.columns)
    first, second = out.iloc[0], out.iloc[1]
    assert first["amount_vs_merchant_z"] == pytest.approx(3.0)
    assert second["amount_vs_merchant_z"] == pytest.approx(0.0)  # std floored at 1
    assert first["amount_vs_merchant_p95"] == pytest.approx(1.25)
    assert first["amount_vs_buyer_mean"] == pytest.approx(2.0) and np.isnan(second["amount_vs_buyer_mean"])
    assert first["declared_to_amount"] == pytest.approx(0.1)
    assert first["declared_ratio_vs_category"] == pytest.approx(0.125)
    assert first["hs_category_mismatch"] == 1.0 and second["hs_category_mismatch"] == 0.0
    assert first["dangerous_keyword_flag"] == 1.0 and second["dangerous_keyword_flag"] == 0.0
    assert first["control_keyword_flag"] == 0.0
    assert first["ip_card_mismatch"] == 1.0 and first["card_shipping_mismatch"] == 0.0
    assert second["ip_card_mismatch"] == 0.0 and np.isnan(second["ip_shipping_mismatch"])  # shipping unknown
    assert first["new_account"] == 1.0 and second["new_account"] == 0.0
    assert second["buyer_account_age_days"] == 400.0


def test_hs_mismatch_and_keywords_handle_missing_values():
    hs = pd.Series(["330499", None, "850760", "85"])
    cat = pd.Series(["beauty", "beauty", None, "smart_home"])
    assert hs_category_mismatch(hs, cat).tolist()[0] == 0.0
    assert np.isnan(hs_category_mismatch(hs, cat).tolist()[1]) and np.isnan(hs_category_mismatch(hs, cat).tolist()[2])
    assert hs_category_mismatch(hs, cat).tolist()[3] == 0.0
    flags = keyword_flag(pd.Series(["Night  Vision goggles", "", None, "tea"]), CONTROL_KEYWORDS).tolist()
    assert flags[0] == 1.0 and np.isnan(flags[1]) and np.isnan(flags[2]) and flags[3] == 0.0


@pytest.mark.parametrize("name", sorted(ON_DEMAND_FUNCTIONS))
def test_functions_are_pure_and_tolerate_empty_or_missing_inputs(name):
    fn = ON_DEMAND_FUNCTIONS[name]
    empty = fn(pd.DataFrame({c: pd.Series(dtype="float64") for c in ON_DEMAND_INPUTS[name]}))
    assert list(empty.columns) == ON_DEMAND_OUTPUTS[name] and len(empty) == 0
    nothing = fn(pd.DataFrame(index=range(3)))  # no columns at all: NaN-or-neutral outputs, no exception
    assert nothing.shape == (3, len(ON_DEMAND_OUTPUTS[name]))
    frame = pd.DataFrame({c: [1.0, 2.0] for c in ON_DEMAND_INPUTS[name]})
    before = frame.copy()
    fn(frame)
    pd.testing.assert_frame_equal(frame, before)  # inputs untouched


def test_calendar_columns():
    cal = calendar_columns(pd.Series(pd.to_datetime(["2025-11-11", "2025-01-01"])))
    assert cal["target_dow"].tolist() == [1.0, 2.0]
    assert cal["target_month"].tolist() == [11.0, 1.0]
    assert cal["target_dayofyear"].tolist() == [315.0, 1.0]
