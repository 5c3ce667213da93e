"""features/schema.py: validate_table catches every kind of problem, names the column, reports all at once."""

from __future__ import annotations

import pandas as pd
import pytest

from features.schema import TABLES, Problem, coerce_column, get_schema, validate_table
from tradecast.errors import TradecastError


def good_shipments(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({
        "shipment_id": [f"S{i}" for i in range(n)],
        "created_at": pd.date_range("2024-03-01", periods=n, freq="D"),
        "origin_warehouse": ["CN-SZX"] * n,
        "destination_market": ["DE"] * n,
        "lane": ["CN-SZX>DE"] * n,
        "mode": ["air"] * n,
        "carrier": ["c1"] * n,
        "weight_kg": [1.5] * n,
        "late": [True, False] * (n // 2),
    })


def by_column(problems: list[Problem]) -> dict[str, list[Problem]]:
    out: dict[str, list[Problem]] = {}
    for p in problems:
        out.setdefault(p.column, []).append(p)
    return out


def test_valid_frame_has_no_problems_and_canonical_layout():
    clean, problems = validate_table("shipments", good_shipments())
    assert problems == []
    assert list(clean.columns) == TABLES["shipments"].column_names
    assert clean["transit_days"].isna().all() and clean["transit_days"].dtype == "float64"
    assert str(clean["late"].dtype) == "boolean"
    assert clean["delivered_at"].dtype == "datetime64[ns]"


def test_every_kind_of_problem_is_reported_at_once_with_column_and_rows():
    df = good_shipments(6).drop(columns=["carrier"])
    df["weight_kg"] = df["weight_kg"].astype(object)
    df.loc[2, "weight_kg"] = "heavy"            # bad type
    df.loc[4, "weight_kg"] = -3.0               # below minimum
    df.loc[1, "mode"] = "teleport"              # not allowed
    df.loc[5, "shipment_id"] = "S0"             # duplicate key
    df.loc[3, "lane"] = None                    # required value empty
    df["colour"] = "red"                        # unknown column
    _, problems = validate_table("shipments", df)
    cols = by_column(problems)
    assert "required column is missing" in cols["carrier"][0].message
    assert "not a valid float" in cols["weight_kg"][0].message and cols["weight_kg"][0].rows == (2,)
    assert any("below the minimum" in p.message and p.rows == (4,) for p in cols["weight_kg"])
    assert "not allowed" in cols["mode"][0].message and "teleport" in cols["mode"][0].message
    assert cols["mode"][0].rows == (1,)
    assert "duplicate key" in cols["shipment_id"][0].message and cols["shipment_id"][0].rows == (5,)
    assert "empty" in cols["lane"][0].message and cols["lane"][0].rows == (3,)
    assert "not a column of 'shipments'" in cols["colour"][0].message
    assert len(problems) == 7


def test_reference_to_known_table_is_checked():
    skus = pd.DataFrame({
        "sku_id": ["K1", "K2"], "merchant_id": ["M1", "M404"], "category": ["beauty", "toys"],
        "price": [9.9, 5.0], "launch_date": ["2024-01-01", "2024-02-01"], "tier": ["hit", "long_tail"],
        "seasonal": ["false", "true"], "hs_code": ["330499", "950300"],
    })
    _, problems = validate_table("skus", skus, known={"merchants": {"M1"}})
    assert [(p.column, p.rows) for p in problems] == [("merchant_id", (1,))]
    assert "not found in table 'merchants'" in problems[0].message
    _, problems = validate_table("skus", skus)  # no known tables: nothing to check against
    assert problems == []


def test_maximum_and_int_checks():
    df = pd.DataFrame({"date": ["2024-01-01", "2024-01-02", "2024-01-03"], "sku_id": ["A"] * 3,
                       "market": ["US"] * 3, "units": [1, 2, 3], "discount": [0.1, 0.99, 0.0],
                       "live_sessions": [1, 2.5, 0]})
    _, problems = validate_table("daily_sales", df)
    cols = by_column(problems)
    assert "above the maximum" in cols["discount"][0].message and cols["discount"][0].rows == (1,)
    assert "not a valid int" in cols["live_sessions"][0].message and cols["live_sessions"][0].rows == (1,)


def test_dates_bad_text_and_implausible_years():
    df = good_shipments(4)
    df["created_at"] = ["2024-01-01", "not a date", "1970-01-01", "2024-01-04 10:00+02:00"]
    clean, problems = validate_table("shipments", df)
    cols = by_column(problems)
    assert any("not a valid datetime" in p.message and p.rows == (1,) for p in cols["created_at"])
    assert any("outside" in p.message and p.rows == (2,) for p in cols["created_at"])
    # an offset is converted to naive UTC
    assert clean.loc[3, "created_at"] == pd.Timestamp("2024-01-04 08:00")


def test_duplicate_key_over_composite_key_and_null_key_parts():
    df = pd.DataFrame({"date": ["2024-01-01", "2024-01-01", "2024-01-01", None, None],
                       "sku_id": ["A", "A", "B", "C", "C"], "market": ["US", "US", "US", "US", "US"],
                       "units": [1, 2, 3, 4, 5]})
    _, problems = validate_table("daily_sales", df)
    cols = by_column(problems)
    assert cols["date+sku_id+market"][0].rows == (1,)   # null keys are reported as empty, not as duplicates
    assert cols["date"][0].rows == (3, 4)


def test_blank_text_counts_as_empty_and_inf_is_not_a_number():
    df = good_shipments(2)
    df["carrier"] = ["  ", "c1"]
    df["weight_kg"] = [float("inf"), 2.0]
    _, problems = validate_table("shipments", df)
    cols = by_column(problems)
    assert "empty" in cols["carrier"][0].message and cols["carrier"][0].rows == (0,)
    assert "not a valid float" in cols["weight_kg"][0].message


@pytest.mark.parametrize("text,expected", [("TRUE", True), ("no", False), ("1", True), ("0.0", False)])
def test_bool_coercion(text, expected):
    values, failed = coerce_column(pd.Series([text]), "bool")
    assert values[0] is expected or values[0] == expected
    assert not failed.any()


def test_problem_str_names_column_and_rows():
    assert str(Problem("units", "bad", (1, 2))) == "column 'units': bad (e.g. rows 1, 2)"


def test_unknown_table_lists_valid_names():
    with pytest.raises(TradecastError, match="unknown table 'sales'.*daily_sales"):
        get_schema("sales")
