"""The serving feature source against the real Feast store on tiny data: lookups for every family, defaults
for unknown entities, and the velocity push that score_risk does before its lookup."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def feast_home(tiny_home, tmp_path_factory):
    import os

    home = tmp_path_factory.mktemp("feast_home") / "home"
    shutil.copytree(tiny_home, home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRADECAST_HOME", str(home))
        from features.store import apply_definitions, compute_features, get_store, materialize

        compute_features()
        store = get_store()
        apply_definitions(store)
        materialize(store, end="2026-01-01")
        assert os.environ["TRADECAST_HOME"] == str(home)
        yield home


def test_lookup_every_family_and_push(feast_home, tiny_tables):
    from features.store import feature_names
    from serving.loading import FeastFeatureSource
    from serving.predict import delay_rows, demand_rows, risk_rows
    from serving.schemas import DelayRequest, DemandRequest, RiskRequest

    source = FeastFeatureSource()
    sales = tiny_tables["daily_sales"]
    known = sales.iloc[-1]
    demand = demand_rows([DemandRequest(sku_id=known["sku_id"], market=known["market"], horizon_days=3),
                          DemandRequest(sku_id="NO-SUCH-SKU", market="US", horizon_days=2)],
                         start=pd.Timestamp("2026-01-01").date())
    got = source.lookup("demand", demand)
    assert set(feature_names("demand_v1")) <= set(got.frame.columns) and len(got.frame) == 5
    assert got.defaults_used.tolist() == [False, False, False, True, True]

    shipments = tiny_tables["shipments"]
    ship = shipments[shipments["category"].notna()].iloc[-1]
    delay = delay_rows([DelayRequest(origin_warehouse=ship["origin_warehouse"], destination_market=ship["destination_market"],
                                     mode=ship["mode"], carrier=ship["carrier"], weight_kg=2.0, declared_value=30.0,
                                     hs_code="620462", category=ship["category"], promised_days=5,
                                     created_at="2025-12-31T10:00:00")])
    got = source.lookup("delay", delay)
    assert set(feature_names("delay_v1")) <= set(got.frame.columns) and not got.defaults_used[0]

    order = tiny_tables["orders"].iloc[-1]
    request = RiskRequest(order_id="NEW-1", ordered_at="2025-12-31T23:59:00", buyer_id="NEW-BUYER",
                          merchant_id=order["merchant_id"], market=order["market"], amount=25.0,
                          ip="203.0.113.7", device_id="NEW-DEVICE", ip_country="US", card_country="BR")
    rows = risk_rows([request])
    before = source.lookup("risk", rows)
    source.push_orders(rows)
    after = source.lookup("risk", rows)
    assert before.frame["ip_orders_1h"].iloc[0] == 0 and after.frame["ip_orders_1h"].iloc[0] == 1
    assert after.frame["buyer_orders_24h"].iloc[0] == 1


def test_direct_push_writes_what_feast_push_writes(feast_home, tiny_tables):
    from features.store import push_order_velocity
    from serving.loading import FeastFeatureSource
    from serving.predict import risk_rows
    from serving.schemas import RiskRequest

    source = FeastFeatureSource()
    merchant = tiny_tables["orders"].iloc[-1]["merchant_id"]

    def order(tag: str, minute: int) -> RiskRequest:
        return RiskRequest(order_id=f"{tag}-{minute}", ordered_at=f"2025-12-31T20:{minute:02d}:00", buyer_id=f"B-{tag}",
                           merchant_id=merchant, market="DE", amount=10.0 + minute, ip=f"ip-{tag}",
                           device_id=f"d-{tag}", ip_country="DE", card_country="FR", shipping_country="DE")

    for minute in (1, 5, 9):
        push_order_velocity(source.store, risk_rows([order("feast", minute)]))  # Feast's own push()
        source.push_orders(risk_rows([order("direct", minute)]))                # serving's direct push
    feast_row = source.lookup("risk", risk_rows([order("feast", 10)])).frame.iloc[0]
    direct_row = source.lookup("risk", risk_rows([order("direct", 10)])).frame.iloc[0]
    velocity = [c for c in feast_row.index if c.startswith(("buyer_", "device_", "ip_"))
                and isinstance(feast_row[c], (int, float))]
    assert len(velocity) >= 9 and feast_row["buyer_orders_1h"] == 3
    pd.testing.assert_series_equal(direct_row[velocity].astype(float), feast_row[velocity].astype(float),
                                   check_names=False)


def test_velocity_push_is_one_transaction(feast_home, tiny_tables):
    """The three entity-view writes of a scored order commit together: an error part-way rolls all of them back."""
    from features.store import push_order_velocity
    from serving.loading import FeastFeatureSource
    from serving.predict import risk_rows
    from serving.schemas import RiskRequest

    source = FeastFeatureSource(wal=True)
    merchant = tiny_tables["orders"].iloc[-1]["merchant_id"]
    rows = risk_rows([RiskRequest(order_id="TX-1", ordered_at="2025-12-31T21:00:00", buyer_id="B-TX", merchant_id=merchant,
                                  market="DE", amount=12.0, ip="ip-tx", device_id="d-tx", ip_country="DE")])
    with pytest.raises(RuntimeError, match="boom"):
        with source.tables.one_transaction():
            push_order_velocity(None, rows, tables=source.tables)
            raise RuntimeError("boom")
    after_error = source.lookup("risk", rows).frame.iloc[0]
    assert after_error[["ip_orders_1h", "device_orders_1h", "buyer_orders_1h"]].tolist() == [0, 0, 0]
    source.push_orders(rows)
    fresh = FeastFeatureSource()  # a successful push is visible to a new feature source
    assert fresh.lookup("risk", rows).frame.iloc[0][["ip_orders_1h", "device_orders_1h", "buyer_orders_1h"]].tolist() == [1, 1, 1]


def test_online_tables_read_what_feast_get_online_features_reads(feast_home, tiny_tables):
    """The serving read path (OnlineTables: online_read with views resolved once) returns the same vectors and
    default flags as FeatureStore.get_online_features, for known, unknown and repeated entities."""
    from features.online import OnlineTables
    from features.store import get_store, online_features

    store = get_store()
    tables = OnlineTables(store)
    sales, ships, orders = tiny_tables["daily_sales"], tiny_tables["shipments"], tiny_tables["orders"]
    series = (sales["sku_id"] + "|" + sales["market"]).drop_duplicates().tolist()
    lanes = (ships["origin_warehouse"] + ">" + ships["destination_market"] + "|" + ships["mode"]).drop_duplicates()
    cases = {
        "demand_v1": [{"series_id": s} for s in series[:3]] + [{"series_id": "NOPE|XX"}, {"series_id": series[0]}],
        "delay_v1": [{"lane_mode": lane, "carrier": c, "category": "apparel"}
                     for lane, c in zip(lanes[:3], ships["carrier"].unique()[:3])] + [{"lane_mode": "A>B|air"}],
        "risk_v1": [{"merchant_id": r.merchant_id, "buyer_id": r.buyer_id, "device_id": r.device_id or "",
                     "ip": r.ip or "", "category": "apparel"} for r in orders.tail(3).itertuples()]
                   + [{"merchant_id": "M-NONE", "buyer_id": "B-NONE"}],
    }
    for service, entities in cases.items():
        feast_result = online_features(service, entities, store=store)
        fast_result = online_features(service, entities, tables=tables)
        pd.testing.assert_frame_equal(fast_result.frame, feast_result.frame)
        assert fast_result.defaults_used == feast_result.defaults_used
        assert fast_result.defaulted == feast_result.defaulted
        assert any(feast_result.defaults_used) and not all(feast_result.defaults_used)


def test_velocity_state_of_a_hot_entity_is_bounded(feast_home):
    """A burst from one IP (more orders in 24 h than MAX_RECENT_ORDERS) keeps a bounded state; its counts
    saturate at the bound instead of the row growing with every order."""
    from features.feature_repo.definitions import view_feature_fields
    from features.store import MAX_RECENT_ORDERS, push_order_velocity
    from serving.loading import FeastFeatureSource

    source = FeastFeatureSource()
    n = MAX_RECENT_ORDERS + 25
    burst = pd.DataFrame({"ordered_at": pd.date_range("2025-12-31 10:00", periods=n, freq="s"),
                          "amount": 5.0, "ip": "198.51.100.9"})
    push_order_velocity(None, burst.iloc[:10], tables=source.tables)
    push_order_velocity(None, burst.iloc[10:], tables=source.tables)
    names = [name for name, _ in view_feature_fields("ip_activity", source.store._tradecast_config)]
    row = source.tables.read("ip_activity", "ip", ["198.51.100.9"], names)
    assert row["ip_orders_24h"][0] == row["ip_orders_1h"][0] == MAX_RECENT_ORDERS
    assert row["ip_recent_orders"][0].count(";") == MAX_RECENT_ORDERS - 1
    assert row["ip_orders_total"][0] == n  # the running total stays exact


def test_pushed_rows_read_as_the_store_reads_them(feast_home, tiny_tables):
    """The velocity rows a push returns (used by the lookup instead of reading them back) equal what the
    online store returns for those entities afterwards; ids not pushed are still read from the store, and
    writes outside the push are not recorded."""
    from features.compute import ACTIVITY_KEYS
    from features.feature_repo.definitions import view_feature_fields
    from serving.loading import FeastFeatureSource
    from serving.predict import risk_rows
    from serving.schemas import RiskRequest

    source = FeastFeatureSource(wal=True)
    merchant = tiny_tables["orders"].iloc[-1]["merchant_id"]
    known_buyer = tiny_tables["orders"].iloc[-1]["buyer_id"]
    orders = [RiskRequest(order_id=f"KN-{i}", ordered_at=f"2025-12-31T21:0{i}:00", buyer_id=b, merchant_id=merchant,
                          market="DE", amount=10.0 + i, ip=ip, device_id=d, ip_country="DE", card_country=cc)
              for i, (b, ip, d, cc) in enumerate([("B-KN", "ip-kn", "d-kn", "FR"), (known_buyer, "ip-kn", None, "DE"),
                                                  ("B-KN", "ip-kn2", "d-kn", None)])]
    pushed = source.push_orders(risk_rows(orders))
    assert set(pushed) == set(ACTIVITY_KEYS)
    cfg = source.store._tradecast_config
    for view, (key, _) in ACTIVITY_KEYS.items():
        names = [n for n, _ in view_feature_fields(view, cfg)]
        ids = list(pushed[view]) + ["never-pushed", known_buyer]
        from_store = source.tables.read(view, key, ids, names)
        assert source.tables.read(view, key, ids, names, known=pushed[view]) == from_store
        assert from_store[names[0]][len(pushed[view])] is None  # an id never written is still read (as unknown)
    assert pushed["buyer_activity"]["B-KN"]["buyer_orders_24h"] == 2.0
    source.tables.write("ip_activity", "ip", [("ip-later", {"ip_orders_1h": 1.0}, pd.Timestamp("2025-12-31").to_pydatetime())])
    assert "ip-later" not in pushed["ip_activity"]
