"""Feature store (features/compute.py, features/store.py, features/feature_repo): apply, point-in-time training
sets without leakage, TTL, materialize + online lookup with defaults, push velocity."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.filterwarnings("ignore:On demand feature view is an experimental feature"),
              pytest.mark.filterwarnings("ignore:Mean of empty slice"),  # inside Feast's dask offline store
              pytest.mark.filterwarnings("ignore:Discarding nonzero nanoseconds")]

T0 = pd.Timestamp("2024-03-01")


def mini_tables(days: int = 60) -> dict[str, pd.DataFrame]:
    """Small hand-made canonical tables with known values (seeded noise only where values don't matter)."""
    rng = np.random.default_rng(11)
    merchants = pd.DataFrame({"merchant_id": ["M1", "M2"], "size_tier": ["small", "large"],
                              "registered_at": [T0 - pd.Timedelta(days=400), T0 - pd.Timedelta(days=30)],
                              "home_cluster": ["shenzhen_3c", "yiwu_small_goods"], "marketplace": ["shopee", "amazon"],
                              "credit_grade": ["A", "D"], "credit_quality": [0.9, 0.3]})
    skus = pd.DataFrame({"sku_id": ["S1", "S2"], "merchant_id": ["M1", "M2"], "category": ["beauty", "toys"],
                         "price": [10.0, 5.0], "launch_date": [T0 - pd.Timedelta(days=100), T0],
                         "tier": ["hit", "long_tail"], "seasonal": [False, True], "hs_code": ["330499", "950300"]})
    dates = pd.date_range(T0, periods=days, freq="D")
    daily = []
    for sku in ("S1", "S2"):
        for market in ("ID", "DE"):
            units = np.full(days, 10.0 if sku == "S1" else 1.0)
            daily.append(pd.DataFrame({"date": dates, "sku_id": sku, "market": market, "units": units, "price": 10.0,
                                       "discount": 0.0, "promotion_event": None, "live_sessions": 0, "live_viewers": 0,
                                       "stock_out": False}))
    daily = pd.concat(daily, ignore_index=True)
    # S1|ID: a spike of 1000 units on day 30 (the leakage probe)
    daily.loc[(daily["sku_id"] == "S1") & (daily["market"] == "ID") & (daily["date"] == T0 + pd.Timedelta(days=30)), "units"] = 1000.0
    n = 120
    created = T0 + pd.to_timedelta(np.linspace(0, days - 15, n), unit="D")
    transit = np.where(np.arange(n) % 2 == 0, 5.0, 9.0)
    shipments = pd.DataFrame({
        "shipment_id": [f"SH{i}" for i in range(n)], "created_at": created, "origin_warehouse": "CN-SZX",
        "destination_market": "DE", "lane": "CN-SZX>DE", "mode": "air", "carrier": np.where(np.arange(n) % 3 == 0, "C1", "C2"),
        "weight_kg": 2.0, "declared_value": 40.0, "hs_code": "330499", "category": "beauty", "merchant_id": "M1",
        "promised_days": 7.0, "customs_channel": "standard", "clearance_hours": 12.0, "transit_days": transit,
        "delivered_at": created + pd.to_timedelta(transit, unit="D"), "late": transit > 7.0})
    # orders: buyer B1 is the chargeback probe; the rest is background
    m = 200
    ordered = T0 + pd.to_timedelta(np.sort(rng.uniform(0, days, m)), unit="D")
    orders = pd.DataFrame({
        "order_id": [f"O{i}" for i in range(m)], "ordered_at": ordered, "buyer_id": rng.choice(["B2", "B3", "B4"], m),
        "account_created_at": T0 - pd.Timedelta(days=50), "merchant_id": "M2", "sku_id": "S2", "category": "toys",
        "market": "DE", "quantity": 1, "amount": 20.0, "payment_method": "card", "ip": rng.choice(["ip1", "ip2"], m),
        "device_id": rng.choice(["d1", "d2"], m), "ip_country": "DE", "card_country": "DE", "shipping_country": "DE",
        "declared_value": 15.0, "hs_code": "950300", "item_description": "plastic toy", "is_fraud": False,
        "fraud_reported_at": pd.NaT, "is_compliance_issue": False, "compliance_reported_at": pd.NaT})
    probe = pd.DataFrame({
        "order_id": ["P1", "P2", "P3"],
        "ordered_at": [T0 + pd.Timedelta(days=1), T0 + pd.Timedelta(days=10), T0 + pd.Timedelta(days=50)],
        "buyer_id": "B1", "account_created_at": T0, "merchant_id": "M1", "sku_id": "S1", "category": "beauty",
        "market": "DE", "quantity": 1, "amount": [30.0, 60.0, 90.0], "payment_method": "card", "ip": "ip9",
        "device_id": "d9", "ip_country": "DE", "card_country": "DE", "shipping_country": "DE", "declared_value": 30.0,
        "hs_code": "330499", "item_description": "lipstick", "is_fraud": [True, False, False],
        # P1's chargeback arrives 40 days after it: after P2 (day 10), before P3 (day 50)
        "fraud_reported_at": [T0 + pd.Timedelta(days=41), pd.NaT, pd.NaT], "is_compliance_issue": False,
        "compliance_reported_at": pd.NaT})
    orders = pd.concat([orders, probe], ignore_index=True)
    return {"merchants": merchants, "skus": skus, "daily_sales": daily, "shipments": shipments, "orders": orders}


@pytest.fixture(scope="module")
def mini_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with mini tables' feature sources computed and definitions applied (not materialized)."""
    import os

    from features.compute import compute_features, load_features_config
    from features.store import apply_definitions, get_store

    home = tmp_path_factory.mktemp("features_home")
    old = os.environ.get("TRADECAST_HOME")
    os.environ["TRADECAST_HOME"] = str(home)
    try:
        compute_features(load_features_config(), tables=mini_tables())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # Feast: on-demand views are "experimental"
            apply_definitions(get_store())
    finally:
        if old is None:
            os.environ.pop("TRADECAST_HOME", None)
        else:
            os.environ["TRADECAST_HOME"] = old
    return home


@pytest.fixture
def home(mini_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of mini_home as $TRADECAST_HOME."""
    dst = tmp_path / "home"
    shutil.copytree(mini_home, dst)
    monkeypatch.setenv("TRADECAST_HOME", str(dst))
    return dst


def test_nothing_is_created_on_import_and_get_store_points_into_home(tmp_home: Path):
    import features.cli  # noqa: F401
    import features.feature_repo.definitions  # noqa: F401
    import features.store
    from tradecast.paths import feast_dir, feature_data_dir

    assert not tmp_home.exists()
    store = features.store.get_store()
    assert Path(store.config.registry.path).parent == feast_dir()
    assert Path(store.config.online_store.path).parent == feast_dir()
    assert Path(store.config.repo_path) == feature_data_dir()


def test_definitions_apply_cleanly(home: Path):
    from features.store import feature_names, get_store

    store = get_store()
    assert sorted(fs.name for fs in store.list_feature_services()) == ["delay_v1", "demand_v1", "risk_v1"]
    assert {fv.name for fv in store.list_feature_views()} >= {"demand_series", "delay_lane", "risk_merchant", "ip_activity"}
    assert {v.name for v in store.list_on_demand_feature_views()} == {"demand_request", "delay_request", "risk_request"}
    for service in ("demand_v1", "delay_v1", "risk_v1"):
        names = feature_names(service)
        assert len(names) == len(set(names)) > 10
        # every batch feature is a column of its source file
    src = pd.read_parquet(home / "features" / "delay_lane.parquet")
    assert "lane_transit_p90_28d" in src.columns and str(src["event_timestamp"].dt.tz) == "UTC"


def test_unknown_service_and_missing_entity_columns_are_clear_errors(home: Path):
    from features.store import feature_names, training_frame
    from tradecast.errors import TradecastError

    with pytest.raises(TradecastError, match="unknown feature service 'nope'"):
        feature_names("nope")
    with pytest.raises(TradecastError, match="missing column.*lane_mode"):
        training_frame("delay_v1", pd.DataFrame({"carrier": ["C1"], "event_timestamp": [T0]}))


def test_demand_features_never_see_the_future(home: Path):
    from features.store import training_frame

    spike_day = T0 + pd.Timedelta(days=30)
    edf = pd.DataFrame({"series_id": "S1|ID", "event_timestamp": [spike_day, spike_day + pd.Timedelta(days=1),
                                                                  spike_day - pd.Timedelta(hours=1)]})
    tf = training_frame("demand_v1", edf, fill_defaults=False)
    # at the start of the spike day, and an hour before it, nothing of the spike is visible
    assert tf.loc[0, "units_last"] == 10.0 and tf.loc[0, "units_max_28d"] == 10.0
    assert tf.loc[2, "units_max_28d"] == 10.0
    # one day later it is
    assert tf.loc[1, "units_last"] == 1000.0 and tf.loc[1, "units_max_28d"] == 1000.0
    assert tf.loc[1, "units_mean_7d"] == pytest.approx((6 * 10 + 1000) / 7)


def test_delay_features_use_only_delivered_shipments(home: Path):
    from features.store import training_frame

    tables = mini_tables()
    sh = tables["shipments"]
    times = pd.to_datetime([T0 + pd.Timedelta(days=d, hours=7) for d in (3, 12, 25, 40)])
    edf = pd.DataFrame({"lane_mode": "CN-SZX>DE|air", "carrier": "C1", "category": "beauty", "event_timestamp": times})
    tf = training_frame("delay_v1", edf, fill_defaults=False)
    for i, t in enumerate(times):
        day_end = t.normalize()  # rows are daily: the latest row at t is stamped at midnight
        window = sh[(sh["delivered_at"] <= day_end) & (sh["delivered_at"] > day_end - pd.Timedelta(days=28))]
        created_not_delivered = sh[(sh["created_at"] <= day_end)]
        assert tf.loc[i, "lane_delivered_28d"] == len(window)
        if len(window):
            assert tf.loc[i, "lane_late_rate_28d"] == pytest.approx(window["late"].mean())
        else:
            assert np.isnan(tf.loc[i, "lane_late_rate_28d"])
        assert tf.loc[i, "lane_in_transit"] == len(created_not_delivered) - (sh["delivered_at"] <= day_end).sum()


def test_chargebacks_count_only_after_the_label_arrived(home: Path):
    from features.store import risk_entities, training_frame

    orders = mini_tables()["orders"]
    probe = orders[orders["buyer_id"] == "B1"].copy()
    edf = risk_entities(probe, as_of=T0 + pd.Timedelta(days=200))
    tf = training_frame("risk_v1", edf, fill_defaults=False).set_index("order_id")
    # P2 (day 10) comes before P1's chargeback arrived (day 41): not counted; P3 (day 50) sees it
    assert tf.loc["P2", "buyer_chargebacks_known"] == 0
    assert tf.loc["P3", "buyer_chargebacks_known"] == 1
    assert tf.loc["P2", "device_chargebacks_known"] == 0 and tf.loc["P3", "ip_chargebacks_known"] == 1
    assert tf.loc["P2", "merchant_chargebacks_180d"] == 0 and tf.loc["P3", "merchant_chargebacks_180d"] == 1
    # the buyer's order counts include the order itself and nothing later
    assert tf.loc[["P1", "P2", "P3"], "buyer_orders_total"].tolist() == [1, 2, 3]
    assert tf.loc["P2", "buyer_amount_mean"] == pytest.approx(45.0)


def test_risk_entities_apply_label_lag():
    from features.store import risk_entities

    probe = mini_tables()["orders"].query("buyer_id == 'B1'")
    early = risk_entities(probe, as_of=T0 + pd.Timedelta(days=30)).set_index("order_id")
    assert early.empty  # P1's chargeback has not arrived and no label window has closed
    mid = risk_entities(probe, as_of=T0 + pd.Timedelta(days=95)).set_index("order_id")
    assert mid["label"].to_dict() == {"P1": 1}  # P1 positive once reported; P2's window closes on day 100
    late = risk_entities(probe, as_of=T0 + pd.Timedelta(days=101)).set_index("order_id")
    assert late["label"].to_dict() == {"P1": 1, "P2": 0}


def test_ttl_expiry_follows_the_config(home: Path, monkeypatch: pytest.MonkeyPatch):
    from features.store import apply_definitions, get_store, training_frame

    last_row = pd.read_parquet(home / "features" / "demand_series.parquet")["event_timestamp"].max().tz_localize(None)
    edf = pd.DataFrame({"series_id": "S1|DE", "event_timestamp": [last_row + pd.Timedelta(days=d) for d in (1, 3, 8)]})
    tf = training_frame("demand_v1", edf, fill_defaults=False)  # configured TTL: 7 days
    assert tf["units_mean_7d"].notna().tolist() == [True, True, False]
    monkeypatch.setenv("TRADECAST_FEATURES__TTL_DAYS__DEMAND_SERIES", "2")
    store = get_store()
    apply_definitions(store)
    tf = training_frame("demand_v1", edf, store=store, fill_defaults=False)
    assert tf["units_mean_7d"].notna().tolist() == [True, False, False]


def test_training_frame_keeps_rows_order_and_duplicates(home: Path):
    from features.store import demand_entities, feature_names, training_frame

    ent = demand_entities(mini_tables()["daily_sales"], horizons=(1, 7), as_of=T0 + pd.Timedelta(days=60))
    shuffled = ent.sample(frac=1.0, random_state=1)
    tf = training_frame("demand_v1", shuffled)
    assert list(tf.index) == list(shuffled.index) and len(tf) == len(ent)
    assert list(tf.columns) == list(shuffled.columns) + feature_names("demand_v1")
    # same series and origin, different horizons: same history features, different target-day features
    same = tf[(tf["series_id"] == "S1|ID") & (tf["origin_date"] == T0 + pd.Timedelta(days=35))]
    assert len(same) == 2 and same["units_max_28d"].nunique() == 1
    assert (ent["target_date"] - ent["origin_date"]).dt.days.tolist() == (ent["horizon"] - 1).tolist()


def test_online_lookup_returns_materialized_values_and_flags_defaults(home: Path):
    from features.store import feature_names, get_store, materialize, online_features

    store = get_store()
    summary = materialize(store, end=T0 + pd.Timedelta(days=70))
    assert "demand_series" in summary.views
    src = pd.read_parquet(home / "features" / "demand_series.parquet")
    latest = src[src["series_id"] == "S1|ID"].sort_values("event_timestamp").iloc[-1]
    res = online_features("demand_v1", [{"series_id": "S1|ID"}, {"series_id": "NOPE|XX"}],
                          request_data={"price": 9.0, "target_dow": 2.0}, store=store)
    assert list(res.frame.columns) == feature_names("demand_v1")
    assert res.defaults_used == [False, True]
    known, unknown = res.frame.iloc[0], res.frame.iloc[1]
    for col in ("units_mean_28d", "units_std_91d", "promo_lift", "days_since_launch"):
        assert known[col] == pytest.approx(latest[col])
    assert known["sku_tier"] == "hit"
    defaults = json.loads((home / "feast" / "feature_defaults.json").read_text())
    assert unknown["units_mean_28d"] == pytest.approx(defaults["units_mean_28d"])
    assert unknown["live_sessions_28d"] == 0.0 and unknown["sku_tier"] == "unknown"
    assert "units_mean_28d" in res.defaulted[1]
    assert known["target_price_ratio"] == pytest.approx(9.0 / latest["price_median_28d"])


def test_online_request_features_match_feast_on_demand_views(home: Path):
    """Our online path and Feast's own on-demand view give the same request-time features."""
    from features.store import get_store, materialize, online_features

    store = get_store()
    materialize(store, end=T0 + pd.Timedelta(days=70))
    entity = {"lane_mode": "CN-SZX>DE|air", "carrier": "C2", "category": "beauty"}
    request = {"promised_days": 8.0, "weight_kg": 3.0, "declared_value": 90.0}
    ours = online_features("delay_v1", [entity], request_data=request, store=store).frame.iloc[0]
    feast = store.get_online_features(features=store.get_feature_service("delay_v1"),
                                      entity_rows=[{**entity, **request}]).to_dict()
    for col in ("promised_vs_lane_p90", "promised_minus_lane_median", "value_per_kg", "value_per_kg_vs_category"):
        assert ours[col] == pytest.approx(feast[col][0])


def test_push_order_velocity_updates_online_counts(home: Path):
    from features.store import get_store, materialize, online_features, push_order_velocity

    store = get_store()
    materialize(store, end=T0 + pd.Timedelta(days=70))
    t = T0 + pd.Timedelta(days=80)
    burst = [{"ordered_at": t + pd.Timedelta(minutes=m), "amount": 10.0, "buyer_id": "NEWB", "device_id": "d1",
              "ip": "ip-new", "ip_country": "CN", "shipping_country": "DE"} for m in (0, 10, 20)]
    assert push_order_velocity(store, burst) == 3  # buyer, device, ip rows
    entity = {"merchant_id": "M1", "buyer_id": "NEWB", "device_id": "d1", "ip": "ip-new", "category": "toys"}
    row = online_features("risk_v1", [entity], store=store).frame.iloc[0]
    assert row["buyer_orders_1h"] == 3 and row["buyer_orders_24h"] == 3 and row["ip_orders_1h"] == 3
    assert row["buyer_amount_24h"] == 30.0 and row["buyer_mismatch_share"] == 1.0
    d1_total_before = pd.read_parquet(home / "features" / "device_activity.parquet").query("device_id == 'd1'")[
        "device_orders_total"].max()
    assert row["device_orders_total"] == d1_total_before + 3
    push_order_velocity(store, {"ordered_at": t + pd.Timedelta(hours=2), "amount": 50.0, "buyer_id": "NEWB"})
    row = online_features("risk_v1", [entity], store=store).frame.iloc[0]
    assert row["buyer_orders_1h"] == 1 and row["buyer_orders_24h"] == 4 and row["buyer_orders_total"] == 4
    assert row["buyer_amount_mean"] == pytest.approx(20.0)


def test_redis_is_one_switch_away(tmp_home: Path, monkeypatch: pytest.MonkeyPatch):
    from features.store import get_store, redis_connection_string
    from tradecast.errors import TradecastError

    assert redis_connection_string("redis://localhost:6379/0") == "localhost:6379,db=0"
    assert redis_connection_string("rediss://:s3cret@cache.internal:6380/2") == "cache.internal:6380,db=2,password=s3cret,ssl=true"
    assert redis_connection_string("redis-host:6379,db=1") == "redis-host:6379,db=1"
    with pytest.raises(TradecastError, match="redis_url"):
        redis_connection_string("http://x")
    monkeypatch.setenv("TRADECAST_FEATURES__ONLINE_STORE", "redis")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/3")
    store = get_store()  # no server needed to build the store
    assert store.config.online_store.type == "redis"
    assert store.config.online_store.connection_string == "cache:6379,db=3"


def test_config_errors_name_the_key(tmp_path: Path):
    from features.compute import load_features_config
    from tradecast.errors import ConfigError

    bad = tmp_path / "features.yaml"
    bad.write_text("online_store: memcached\n")
    with pytest.raises(ConfigError, match="online_store"):
        load_features_config(bad)
    bad.write_text("demand_windows_days: [7, 91]\n")
    with pytest.raises(ConfigError, match="28"):
        load_features_config(bad)
    bad.write_text("ttl_days: {demand_seris: 3}\n")
    with pytest.raises(ConfigError, match="demand_seris"):
        load_features_config(bad)


def test_generated_tiny_data_end_to_end(tiny_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The generator's tiny tables: compute, apply, materialize, and a training frame per service."""
    from features.offline import read_table
    from features.store import (apply_definitions, compute_features, delay_entities, demand_entities, feature_names,
                                get_store, materialize, online_features, risk_entities, training_frame)

    home_dir = tmp_path / "home"
    shutil.copytree(tiny_home, home_dir)
    monkeypatch.setenv("TRADECAST_HOME", str(home_dir))
    written = compute_features()
    assert set(written) == {"demand_series", "delay_lane", "delay_carrier", "category_norms", "risk_merchant",
                            "buyer_activity", "device_activity", "ip_activity"}
    store = get_store()
    apply_definitions(store)
    materialize(store)
    daily = read_table("daily_sales")
    frames = {
        "demand_v1": demand_entities(daily, horizons=(1, 14), origins=daily["date"].drop_duplicates().sort_values()[100::30]),
        "delay_v1": delay_entities(read_table("shipments")).tail(500),
        "risk_v1": risk_entities(read_table("orders")).tail(500),
    }
    for service, entities in frames.items():
        tf = training_frame(service, entities, store=store)
        names = feature_names(service)
        assert len(tf) == len(entities) and list(tf.columns[-len(names):]) == names
        numeric = tf[names].select_dtypes("number")
        assert numeric.notna().mean().mean() > 0.9, service
    ent = frames["risk_v1"].iloc[-1]
    res = online_features("risk_v1", [ent.to_dict()], store=store)
    assert res.defaults_used == [False]


def test_activity_state_string_round_trips(home: Path):
    from features.store import format_recent_orders, parse_recent_orders

    pairs = [(1709251200, 30.0), (1709254800, 12.5)]
    assert parse_recent_orders(format_recent_orders(pairs)) == pairs
    assert parse_recent_orders(None) == [] and parse_recent_orders("") == []
    src = pd.read_parquet(home / "features" / "buyer_activity.parquet").query("buyer_id == 'B1'")
    last = src.sort_values("event_timestamp").iloc[-1]
    # B1's last row is P3 (day 50); P1 and P2 are more than 24 h before it
    assert last["event_timestamp"] == pd.Timestamp(T0 + pd.Timedelta(days=50), tz="UTC")
    assert parse_recent_orders(last["buyer_recent_orders"]) == [(int((T0 + pd.Timedelta(days=50)).timestamp()), 90.0)]


def test_cli_apply_and_materialize(home: Path):
    from typer.testing import CliRunner

    from tradecast.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["features", "apply", "--no-compute"])
    assert result.exit_code == 0, result.output
    assert "applied" in result.output
    result = runner.invoke(app, ["features", "materialize", "--end", "2024-04-15"])
    assert result.exit_code == 0, result.output
    assert "materialized 8 feature views up to 2024-04-15" in result.output
    result = runner.invoke(app, ["features", "materialize", "--end", "not-a-date"])
    assert result.exit_code == 2 and "--end" in result.output


def test_time_chunked_join_equals_one_feast_call(home: Path):
    """training_frame slices sources per time chunk; the answer equals Feast's join on the whole source."""
    from features.store import get_store, training_frame

    rng = np.random.default_rng(5)
    n = 120
    edf = pd.DataFrame({"series_id": rng.choice(["S1|ID", "S1|DE", "S2|ID", "S2|DE", "NOPE|XX"], n),
                        "event_timestamp": T0 + pd.to_timedelta(rng.uniform(-5, 75, n), unit="D")})
    edf = edf.drop_duplicates().reset_index(drop=True)
    ours = training_frame("demand_v1", edf, fill_defaults=False)
    store = get_store()
    direct = store.get_historical_features(
        entity_df=edf.assign(event_timestamp=edf["event_timestamp"].dt.tz_localize("UTC")),
        features=["demand_series:units_mean_7d", "demand_series:units_max_28d", "demand_series:sku_tier"]).to_df()
    direct["event_timestamp"] = direct["event_timestamp"].dt.tz_convert(None)
    both = ours.merge(direct, on=["series_id", "event_timestamp"], suffixes=("", "_feast"), how="left", indicator=True)
    # Feast's file store leaves out entity rows whose entity has rows but none within the TTL: those are nulls
    dropped = both["_merge"] == "left_only"
    assert both.loc[dropped, ["units_mean_7d", "units_max_28d", "sku_tier"]].isna().all().all()
    both = both[~dropped].reset_index(drop=True)
    assert len(both) > n / 2
    pd.testing.assert_series_equal(both["units_mean_7d"], both["units_mean_7d_feast"], check_names=False)
    pd.testing.assert_series_equal(both["units_max_28d"], both["units_max_28d_feast"], check_names=False)
    assert (both["sku_tier"].fillna("-") == both["sku_tier_feast"].fillna("-")).all()
    assert ours["units_mean_7d"].notna().sum() > n / 2
