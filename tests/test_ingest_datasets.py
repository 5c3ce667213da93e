"""The shipped mapping files (configs/datasets/*.yaml) ingest the real public data sets in ../shared/datasets.

Each test skips with a clear reason when the data set is absent. Expected figures are recomputed from the
raw file with plain pandas where possible, so the test checks the mapping, not a number copied from it.
"""

from __future__ import annotations

import pandas as pd
import pytest

from features.ingest import ingest_file
from features.offline import read_table, table_metadata
from features.schema import MARKETS
from conftest import shared_dataset
from tradecast.paths import CONFIG_DIR

MAPPINGS = CONFIG_DIR / "datasets"
DATACO = ("dataco_supply_chain_sample", "DataCoSupplyChainDataset_sample6000.csv.gz")


def test_walmart_weekly_stays_weekly(tmp_home):
    source = shared_dataset("walmart_weekly_sales", "train.csv.zip")
    result = ingest_file("daily_sales", source, MAPPINGS / "walmart_weekly.yaml")
    df = read_table("daily_sales")
    assert result.rows == len(df) == 421_570
    assert table_metadata("daily_sales")["frequency"] == "W" and result.frequency == "W"
    assert df["sku_id"].nunique() == 3331 and df["sku_id"].str.match(r"^W\d+-\d+$").all()
    assert set(df["market"]) == {"US"}
    # weekly, not coerced to daily: consecutive dates of every series are 7 days apart
    gaps = df.sort_values(["sku_id", "date"]).groupby("sku_id")["date"].diff().dropna()
    assert (gaps.dt.days % 7 == 0).all() and gaps.dt.days.min() == 7
    assert (gaps.dt.days == 7).mean() > 0.98   # the rest are weeks a department sold nothing (row absent)
    assert df["date"].nunique() == 143 and set(df["date"].dt.dayofweek) == {4}   # 143 Fridays
    assert df["date"].min() == pd.Timestamp("2010-02-05") and df["date"].max() == pd.Timestamp("2012-10-26")
    # negative sales (returns) clipped to zero; the rest are the dollar figures unchanged
    assert df["units"].min() == 0 and (df["units"] == 0).sum() >= 1285
    assert df.loc[(df["sku_id"] == "W1-1") & (df["date"] == "2010-02-05"), "units"].item() == pytest.approx(24924.5)
    holidays = df.loc[df["promotion_event"].notna(), "date"].dt.strftime("%Y-%m-%d").unique()
    assert set(df["promotion_event"].dropna()) == {"us_holiday"}
    assert {"2010-02-12", "2010-12-31", "2011-11-25"} <= set(holidays) and len(holidays) == 10
    assert df["price"].isna().all() and df["discount"].isna().all()


def test_ecommerce_shipping_late_rate_and_units(tmp_home):
    source = shared_dataset("ecommerce_shipping", "Train.csv")
    raw = pd.read_csv(source, encoding="utf-8-sig")
    ingest_file("shipments", source, MAPPINGS / "ecommerce_shipping.yaml")
    df = read_table("shipments")
    assert len(df) == len(raw) == 10_999
    assert df["late"].mean() == pytest.approx(0.5967, abs=0.005)   # 1 means LATE in Reached.on.Time_Y.N
    assert df["late"].sum() == (raw["Reached.on.Time_Y.N"] == 1).sum()
    assert df["weight_kg"].to_numpy() == pytest.approx(raw["Weight_in_gms"].to_numpy() / 1000)
    assert df["mode"].value_counts().to_dict() == {
        "sea": (raw["Mode_of_Shipment"] == "Ship").sum(),
        "air": (raw["Mode_of_Shipment"] == "Flight").sum(),
        "express": (raw["Mode_of_Shipment"] == "Road").sum(),
    }
    assert set(df["lane"]) == {f"EC-WH-{b}>US" for b in "ABCDF"}
    # synthesized timestamps: unique, hourly from 2023-01-01, deterministic, not in file (sorted) order
    assert df["created_at"].is_unique and df["created_at"].min() == pd.Timestamp("2023-01-01")
    assert not df["created_at"].is_monotonic_increasing
    first = df["created_at"].copy()
    ingest_file("shipments", source, MAPPINGS / "ecommerce_shipping.yaml")
    assert read_table("shipments")["created_at"].equals(first)


def test_dataco_shipments(tmp_home):
    source = shared_dataset(*DATACO)
    raw = pd.read_csv(source)
    result = ingest_file("shipments", source, MAPPINGS / "dataco_shipments.yaml")
    df = read_table("shipments")
    kept = raw[(raw["Market"] != "Africa") & (raw["Delivery Status"] != "Shipping canceled")]
    assert len(df) == len(kept) and result.dropped_rows == len(raw) - len(kept)
    assert df["shipment_id"].is_unique
    # late = real > scheduled, and on the kept rows it agrees with DataCo's own Late_delivery_risk
    assert df["late"].sum() == kept["Late_delivery_risk"].sum()
    assert 0.5 < df["late"].mean() < 0.7
    assert (df["late"] == (df["transit_days"] > df["promised_days"])).all()
    assert df["promised_days"].min() == 0.5   # Same Day (0) clipped to half a day
    assert (df["delivered_at"] - df["created_at"]).dt.days.equals(df["transit_days"].astype("int64"))
    assert set(df["destination_market"]) <= set(MARKETS)
    assert set(df["mode"]) == {"air", "express"}
    assert df.loc[df["shipment_id"] == "DC-78239", "destination_market"].item() == "US"   # Estados Unidos
    assert df["created_at"].min() >= pd.Timestamp("2015-01-01") and df["created_at"].max() < pd.Timestamp("2018-03-01")


def test_dataco_orders_fraud_labels(tmp_home):
    source = shared_dataset(*DATACO)
    raw = pd.read_csv(source)
    ingest_file("orders", source, MAPPINGS / "dataco_orders.yaml")
    df = read_table("orders")
    assert len(df) == 6000 and df["order_id"].is_unique
    assert int(df["is_fraud"].sum()) == 146
    assert df["is_fraud"].notna().all()
    assert df["amount"].sum() == pytest.approx(raw["Order Item Total"].sum())
    assert set(df["market"]) <= set(MARKETS)
    african = (raw["Market"] == "Africa").to_numpy()
    assert (df.loc[african, "market"] == "AE").all()               # documented choice: Africa -> AE hub
    assert set(df["payment_method"]) == {"debit", "transfer", "payment", "cash"}
    assert df["ordered_at"].notna().all() and df["quantity"].min() >= 1
