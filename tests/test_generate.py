"""Synthetic generator: schema, determinism, and the statistical drivers of DESIGN.md."""

from __future__ import annotations

import time
from datetime import date

import numpy as np
import pandas as pd
import pytest

from features.generate import (
    generate_shipments,
    generate_tables,
    generate_to_store,
    has_control_keyword,
    hs_matches_category,
    load_data_config,
    scenario_start,
    summary_lines,
)
from features.schema import MARKET_REGION, TABLES, validate_table
from tradecast.errors import TradecastError


@pytest.fixture(scope="module")
def cfg():
    return load_data_config(None)


def _ordinary_base(daily: pd.DataFrame) -> np.ndarray:
    """Each row's series mean over ordinary days (no promotion, no live stream, no stock-out)."""
    ordinary = daily["promotion_event"].isna() & (daily["live_sessions"] == 0) & ~daily["stock_out"]
    key = daily["sku_id"] + "|" + daily["market"]
    return daily["units"].where(ordinary).groupby(key).transform("mean").to_numpy()


# ------------------------------------------------------------------------------------------ schema & API
def test_every_table_fits_the_canonical_schema(tiny_tables):
    assert set(tiny_tables) == set(TABLES)
    known = {"merchants": set(tiny_tables["merchants"]["merchant_id"]), "skus": set(tiny_tables["skus"]["sku_id"])}
    for name, df in tiny_tables.items():
        _, problems = validate_table(name, df, known=known)
        assert problems == [], (name, [str(p) for p in problems])
        assert list(df.columns) == TABLES[name].column_names
        assert len(df) > 0


def test_dtypes_are_plain_and_keys_unique(tiny_tables):
    sales = tiny_tables["daily_sales"]
    assert sales["date"].dtype == "datetime64[ns]"
    assert sales["stock_out"].dtype == bool and sales["live_sessions"].dtype == np.int64
    assert tiny_tables["shipments"]["late"].dtype == bool
    assert tiny_tables["orders"]["is_fraud"].dtype == bool
    assert tiny_tables["orders"]["order_id"].is_unique and tiny_tables["shipments"]["shipment_id"].is_unique
    assert not sales.duplicated(["date", "sku_id", "market"]).any()
    # shipments reference real merchants, orders real skus of that merchant
    orders = tiny_tables["orders"].merge(tiny_tables["skus"][["sku_id", "merchant_id"]], on="sku_id", suffixes=("", "_sku"))
    assert len(orders) == len(tiny_tables["orders"])
    assert (orders["merchant_id"] == orders["merchant_id_sku"]).all()
    assert set(tiny_tables["shipments"]["merchant_id"]) <= set(tiny_tables["merchants"]["merchant_id"])


def test_tiny_scale_size_and_speed(cfg):
    t0 = time.perf_counter()
    tables = generate_tables(cfg, "tiny", seed=3)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"tiny took {elapsed:.2f}s"
    assert 20 <= len(tables["skus"]) <= 40
    days = tables["daily_sales"]["date"].nunique()
    assert 150 <= days <= 240
    assert 1000 <= len(tables["shipments"]) <= 10000 and 1000 <= len(tables["orders"]) <= 10000


def test_unknown_scale_and_scenario_name_the_choices(cfg):
    with pytest.raises(TradecastError, match="tiny, small, medium, large"):
        generate_tables(cfg, "huge", seed=1)
    with pytest.raises(TradecastError, match="red_sea, new_live_channel, fraud_ring"):
        generate_tables(cfg, "tiny", seed=1, scenario="moon_landing")
    with pytest.raises(TradecastError, match="days"):
        generate_tables(cfg, "tiny", seed=1, days=3)


def test_start_and_days_override_the_period(cfg):
    tables = generate_tables(cfg, "tiny", seed=1, start=date(2024, 3, 1), days=60)
    dates = tables["daily_sales"]["date"]
    assert dates.min() == pd.Timestamp("2024-03-01") and dates.max() == pd.Timestamp("2024-04-29")
    assert tables["orders"]["ordered_at"].min() >= pd.Timestamp("2024-03-01")
    assert tables["orders"]["ordered_at"].max() < pd.Timestamp("2024-04-30")
    # Ramadan 2024 (Mar 11 - Apr 9) is a promotion in its markets only
    ram = tables["daily_sales"][tables["daily_sales"]["promotion_event"] == "ramadan"]
    assert len(ram) and set(ram["market"]) <= {"SA", "AE", "MY", "ID"}
    assert ram["date"].min() >= pd.Timestamp("2024-03-11") and ram["date"].max() <= pd.Timestamp("2024-04-09")
    # a scenario's start sits inside the period even when the period is shorter than its offset
    s = scenario_start(cfg, "red_sea", date(2024, 3, 1), 60)
    assert pd.Timestamp("2024-03-01") < s < pd.Timestamp("2024-04-29")
    assert scenario_start(cfg, None, None, None) is None


def test_bad_config_key_is_a_clear_error(monkeypatch):
    from tradecast.errors import ConfigError

    monkeypatch.setenv("TRADECAST_DATA__SCALES__TINY__SKUZ", "3")
    with pytest.raises(ConfigError, match="scales.tiny.skuz"):
        load_data_config(None)


# ---------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_tables_and_different_seed_differs(cfg, tiny_tables):
    again = generate_tables(cfg, "tiny", seed=7)
    for name in TABLES:
        pd.testing.assert_frame_equal(again[name], tiny_tables[name])
    other = generate_tables(cfg, "tiny", seed=8)
    assert not other["daily_sales"]["units"].equals(tiny_tables["daily_sales"]["units"])
    assert not other["orders"]["amount"].equals(tiny_tables["orders"]["amount"])


def test_same_seed_writes_byte_identical_parquet(cfg, tmp_path, monkeypatch):
    from tradecast.paths import table_path

    contents = []
    for run in ("a", "b"):
        monkeypatch.setenv("TRADECAST_HOME", str(tmp_path / run))
        generate_to_store(cfg, "tiny", seed=11, start=date(2025, 1, 1), days=60)
        contents.append({t: table_path(t).read_bytes() for t in TABLES})
    assert contents[0] == contents[1]


def test_store_metadata_and_streamed_writes_match_in_memory(cfg, tmp_path, monkeypatch):
    """A scale marked `stream` (like large) writes chunk by chunk; the result equals the in-memory tables."""
    from features.offline import read_table, table_metadata

    scales = dict(cfg.scales)
    scales["tiny_stream"] = scales["tiny"].model_copy(update={"stream": True})
    small_chunks = cfg.model_copy(update={"scales": scales, "sku_chunk": 7, "order_window_days": 30})
    monkeypatch.setenv("TRADECAST_HOME", str(tmp_path / "home"))
    counts = generate_to_store(small_chunks, "tiny_stream", seed=5, scenario="fraud_ring")
    expected = generate_tables(small_chunks, "tiny", seed=5, scenario="fraud_ring")
    assert counts["daily_sales"] == len(expected["daily_sales"]) and counts["orders"] == len(expected["orders"])
    for name in TABLES:
        pd.testing.assert_frame_equal(read_table(name), expected[name], check_dtype=False)
    meta = table_metadata("orders")
    assert meta["rows"] == len(expected["orders"]) and meta["scenario"] == "fraud_ring" and meta["seed"] == 5
    assert meta["scenario_start"] == str(scenario_start(small_chunks, "fraud_ring", None, None, scale="tiny").date())
    assert any("orders" in line for line in summary_lines(counts))


# --------------------------------------------------------------------------------------------- skus
def test_hs_codes_fit_categories_and_flags_make_sense(tiny_tables):
    skus = tiny_tables["skus"]
    assert skus["hs_code"].str.fullmatch(r"\d{6}").all()
    assert hs_matches_category(skus["hs_code"], skus["category"]).all()
    assert not hs_matches_category(pd.Series(["490199"]), pd.Series(["beauty"]))[0]
    assert (skus.loc[skus["cold_chain"], "category"] == "food").all()
    assert set(skus["tier"]) == {"hit", "potential", "long_tail"}
    assert (skus["tier"] == "long_tail").mean() > (skus["tier"] == "hit").mean()
    assert has_control_keyword(pd.Series(["Power bank 10000mAh", "cotton t-shirt"])).tolist() == [True, False]


# ------------------------------------------------------------------------------------------- demand
def test_promotion_peak_days_lift_sales_several_fold(tiny_tables):
    d = tiny_tables["daily_sales"]
    base = _ordinary_base(d)
    peaks = pd.to_datetime(["2025-06-18", "2025-09-09", "2025-10-10", "2025-11-11", "2025-11-28", "2025-12-01",
                            "2025-12-12"])
    rows = (d["date"].isin(peaks) & d["promotion_event"].notna() & (d["live_sessions"] == 0) & ~d["stock_out"]
            & (base >= 1)).to_numpy()
    assert rows.sum() >= 20
    lift = d["units"].to_numpy()[rows].sum() / base[rows].sum()
    assert lift > 2.5, lift
    assert ((d["discount"] >= 0.1) & (d["discount"] <= 0.4))[rows].mean() > 0.9


def test_live_stream_spikes_about_500_percent_then_fall_back(tiny_tables):
    d = tiny_tables["daily_sales"].sort_values(["sku_id", "market", "date"]).reset_index(drop=True)
    base = _ordinary_base(d)
    live = (d["live_sessions"] > 0) & d["promotion_event"].isna() & ~d["stock_out"] & (base >= 2)
    ratio = d["units"][live] / base[live]
    assert live.sum() >= 30
    assert 4.0 < ratio.median() < 9.0, ratio.median()  # about +500% (+300%..+800%)
    assert ratio.quantile(0.95) > 1.8 * ratio.median()  # heavy tail
    same = (d["sku_id"] == d["sku_id"].shift(1)) & (d["market"] == d["market"].shift(1))
    next_day = same & live.shift(1, fill_value=False) & (d["live_sessions"] == 0) & d["promotion_event"].isna() & ~d["stock_out"]
    assert next_day.sum() >= 20
    assert 0.6 < (d["units"][next_day] / base[next_day]).median() < 1.3
    assert ((d["live_viewers"] > 0) == (d["live_sessions"] > 0)).all()


def test_stock_outs_censor_sales_in_episodes(tiny_tables):
    d = tiny_tables["daily_sales"].sort_values(["sku_id", "market", "date"]).reset_index(drop=True)
    base = _ordinary_base(d)
    so = d["stock_out"].to_numpy()
    assert 0.005 < so.mean() < 0.08
    sel = so & (base >= 2)
    assert d["units"].to_numpy()[sel].sum() < 0.5 * base[sel].sum()
    assert (d["units"][so] == 0).mean() > 0.4
    # episodes last several days: most stock-out days have a stock-out neighbour
    same = (d["sku_id"] == d["sku_id"].shift(1)) & (d["market"] == d["market"].shift(1))
    prev = d["stock_out"].shift(1, fill_value=False) & same
    nxt = d["stock_out"].shift(-1, fill_value=False) & same.shift(-1, fill_value=False)
    assert (prev | nxt)[so].mean() > 0.8


def test_weekly_pattern_and_long_tail_intermittency(tiny_tables):
    d = tiny_tables["daily_sales"]
    base = _ordinary_base(d)
    ok = d["promotion_event"].isna() & (d["live_sessions"] == 0) & ~d["stock_out"] & (base >= 1)
    rel = (d["units"] / base)[ok]
    region = d["market"].map(MARKET_REGION)[ok]
    dow = d["date"].dt.dayofweek[ok]
    eu = rel[(region == "europe").to_numpy()].groupby(dow[(region == "europe").to_numpy()]).mean()
    assert eu[6] / eu[5] > 1.15  # Sunday well above Saturday in Europe
    tier = d["sku_id"].map(tiny_tables["skus"].set_index("sku_id")["tier"])
    assert (d["units"][tier == "long_tail"] == 0).mean() > 0.3
    assert d["units"][tier == "hit"].median() >= 20


# ------------------------------------------------------------------------------------------ transit
def test_transit_times_late_rates_by_mode_and_lane(tiny_tables):
    s = tiny_tables["shipments"]
    on_time = 1 - s["late"].mean()
    assert 0.75 <= on_time <= 0.87, on_time
    by_mode = s.groupby("mode").agg(transit=("transit_days", "median"), late=("late", "mean"))
    assert by_mode.loc["sea", "transit"] > 2 * by_mode.loc["air", "transit"]
    assert by_mode.loc["sea", "late"] > by_mode.loc["air", "late"]
    assert (s["late"] == (s["transit_days"] > s["promised_days"])).all()
    wh = s["customs_channel"].isna()
    assert wh.any() and s.loc[wh, "transit_days"].median() < 6
    assert (s.loc[wh, "mode"] == "express").all() and not s.loc[wh, "origin_warehouse"].str.startswith("CN-").any()
    assert (s.loc[s["mode"] == "rail", "destination_market"].map(MARKET_REGION) == "europe").all()
    eu_air = s[(s["mode"] == "air") & (s["destination_market"].map(MARKET_REGION) == "europe")]
    assert 9 < eu_air["transit_days"].mean() < 16
    sea = s[s["mode"] == "sea"]
    assert 25 < sea.loc[sea["destination_market"].map(MARKET_REGION) == "europe", "transit_days"].median() < 48
    assert (s["lane"] == s["origin_warehouse"] + ">" + s["destination_market"]).all()
    delivered = s["created_at"] + pd.to_timedelta(s["transit_days"], unit="D")
    assert (abs(delivered - s["delivered_at"]) < pd.Timedelta(seconds=1)).all()


def test_delay_varies_predictably_within_lane_and_mode(tiny_tables):
    """Carrier, customs channel and peak season move transit within a lane x mode: beyond the lane median."""
    s = tiny_tables["shipments"].copy()
    s["excess"] = s["transit_days"] / s.groupby(["lane", "mode"])["transit_days"].transform("median")
    assert s.groupby("customs_channel")["excess"].median()["inspection"] > 1.2
    carriers = s[s["mode"] == "air"].groupby("carrier")["excess"].median()
    assert carriers.max() / carriers.min() > 1.1
    peak = s["created_at"].dt.month.isin([11, 12])
    assert s.loc[peak, "excess"].mean() > s.loc[~peak & s["created_at"].dt.month.isin([7, 8, 9]), "excess"].mean()


def test_clearance_hours_by_customs_channel(tiny_tables):
    s = tiny_tables["shipments"]
    cross = s["customs_channel"].notna()
    assert (s.loc[~cross, "clearance_hours"] == 0).all()
    c = s[cross]
    assert c["clearance_hours"].between(0.5, 240).all()
    med = c.groupby("customs_channel")["clearance_hours"].median()
    assert med["fast_lane"] < 12 < med["standard"] < 72 < med["inspection"]
    assert 0.03 < (c["customs_channel"] == "inspection").mean() < 0.15
    mis = ~hs_matches_category(c["hs_code"], c["category"])
    std = (c["customs_channel"] == "standard").to_numpy()
    assert (mis & std).sum() >= 5
    assert c["clearance_hours"][mis & std].median() > c["clearance_hours"][~mis & std].median() + 12
    # fast lane only for good-grade merchants
    grade = c["merchant_id"].map(tiny_tables["merchants"].set_index("merchant_id")["credit_grade"])
    assert grade[c["customs_channel"] == "fast_lane"].isin(["A", "B"]).all()


# --------------------------------------------------------------------------------------------- risk
def test_fraud_is_rare_with_late_labels_and_signals(tiny_tables):
    o = tiny_tables["orders"]
    fraud = o["is_fraud"]
    assert 0.005 < fraud.mean() < 0.05
    assert (o["fraud_reported_at"].notna() == fraud).all()
    lag = (o.loc[fraud, "fraud_reported_at"] - o.loc[fraud, "ordered_at"]).dt.days
    assert lag.between(30, 90).all()
    assert (o["account_created_at"] <= o["ordered_at"]).all()
    mismatch = (o["card_country"] != o["shipping_country"]) | (o["ip_country"] != o["shipping_country"])
    assert mismatch[fraud].mean() > 3 * mismatch[~fraud].mean()
    young = (o["ordered_at"] - o["account_created_at"]) < pd.Timedelta(days=7)
    assert young[fraud].mean() > 3 * young[~fraud].mean()
    # velocity: fraud orders share their device with other orders within the hour far more often
    o = o.sort_values(["device_id", "ordered_at"])
    gap = o.groupby("device_id")["ordered_at"].diff().dt.total_seconds()
    burst = gap < 3600
    assert burst[o["is_fraud"]].mean() > 3 * max(burst[~o["is_fraud"]].mean(), 1e-3)


def test_compliance_issues_follow_declarations(tiny_tables):
    o = tiny_tables["orders"]
    comp = o["is_compliance_issue"]
    assert 0.01 < comp.mean() < 0.07
    assert (o["compliance_reported_at"].notna() == comp).all()
    lag = (o.loc[comp, "compliance_reported_at"] - o.loc[comp, "ordered_at"]).dt.total_seconds() / 86400
    assert lag.between(2, 10).all()
    under = o["declared_value"] < 0.5 * o["amount"]
    mis = ~hs_matches_category(o["hs_code"], o["category"])
    risky = under | mis
    assert comp[risky].mean() > 5 * comp[~risky].mean()
    assert 0.005 < under.mean() < 0.15 and 0.003 < mis.mean() < 0.1


# ---------------------------------------------------------------------------------------- scenarios
def _split(cfg, scenario):
    plain = generate_tables(cfg, "tiny", seed=7)
    shifted = generate_tables(cfg, "tiny", seed=7, scenario=scenario)
    return plain, shifted, scenario_start(cfg, scenario, None, None, scale="tiny")


def test_shipments_alone_equal_the_full_generation(cfg, tiny_tables):
    pd.testing.assert_frame_equal(generate_shipments(cfg, "tiny", seed=7), tiny_tables["shipments"])
    diverted = generate_shipments(cfg, "tiny", seed=7, scenario="red_sea")
    assert not diverted["transit_days"].equals(tiny_tables["shipments"]["transit_days"])


def test_red_sea_delays_sea_lanes_to_europe_only_after_its_date(cfg, tiny_tables):
    plain, shifted, when = _split(cfg, "red_sea")
    a, b = plain["shipments"], shifted["shipments"]
    assert len(a) == len(b) and (a["shipment_id"] == b["shipment_id"]).all()
    hit = ((b["mode"] == "sea") & (b["destination_market"].map(MARKET_REGION) == "europe")
           & (b["created_at"] >= when)).to_numpy()
    assert hit.sum() >= 10
    pd.testing.assert_frame_equal(a[~hit].reset_index(drop=True), b[~hit].reset_index(drop=True))
    extra = b.loc[hit, "transit_days"].to_numpy() - a.loc[hit, "transit_days"].to_numpy()
    assert 6 < np.median(extra) < 16
    assert b.loc[hit, "late"].mean() > a.loc[hit, "late"].mean() + 0.3
    assert b.loc[hit, "transit_days"].std() > a.loc[hit, "transit_days"].std()
    for t in ("daily_sales", "orders"):
        pd.testing.assert_frame_equal(plain[t], shifted[t])


def test_new_live_channel_changes_demand_shape_after_its_date(cfg):
    plain, shifted, when = _split(cfg, "new_live_channel")
    a, b = plain["daily_sales"], shifted["daily_sales"]
    before = (a["date"] < when).to_numpy()
    pd.testing.assert_frame_equal(a[before].reset_index(drop=True), b[before].reset_index(drop=True))
    cats = cfg.scenarios.new_live_channel.categories
    affected = a["sku_id"].map(plain["skus"].set_index("sku_id")["category"]).isin(cats).to_numpy()
    assert (affected & ~before).sum() > 100
    pd.testing.assert_frame_equal(a[~affected].reset_index(drop=True), b[~affected].reset_index(drop=True))
    post = affected & ~before
    assert (b["live_sessions"][post] > 0).mean() > 2 * (a["live_sessions"][post] > 0).mean()
    assert b["units"][post].sum() > 1.1 * a["units"][post].sum()


def test_fraud_ring_adds_a_new_pattern_only_after_its_date(cfg):
    plain, shifted, when = _split(cfg, "fraud_ring")
    a, b = plain["orders"], shifted["orders"]
    before_a, before_b = a[a["ordered_at"] < when], b[b["ordered_at"] < when]
    pd.testing.assert_frame_equal(before_a.reset_index(drop=True), before_b.reset_index(drop=True))
    after_a, after_b = a[a["ordered_at"] >= when], b[b["ordered_at"] >= when]
    assert len(after_b) > len(after_a)
    assert after_b["is_fraud"].mean() > after_a["is_fraud"].mean() + 0.005
    key = lambda df: df["ordered_at"].astype(str) + "|" + df["buyer_id"] + "|" + df["sku_id"]  # noqa: E731
    ring = after_b[~key(after_b).isin(set(key(after_a)))]
    assert len(after_b) - len(ring) == len(after_a)
    assert len(ring) >= 10 and ring["is_fraud"].all()
    # the old signals miss it: aged accounts, matching countries; the new one: few devices, many accounts
    assert (ring["ip_country"] == ring["shipping_country"]).all() and (ring["card_country"] == ring["shipping_country"]).all()
    assert ((ring["ordered_at"] - ring["account_created_at"]) > pd.Timedelta(days=180)).mean() > 0.9
    assert ring["device_id"].nunique() <= cfg.scenarios.fraud_ring.devices
    assert ring.groupby("device_id")["buyer_id"].nunique().max() >= 3
    assert set(ring["category"]) <= set(cfg.scenarios.fraud_ring.categories) or ring["merchant_id"].nunique() <= 3
    for t in ("daily_sales", "shipments"):
        pd.testing.assert_frame_equal(plain[t], shifted[t])


# ----------------------------------------------------------------------------------------- summary
def test_summary_lines_report_the_headline_facts(tiny_tables):
    text = "\n".join(summary_lines(tiny_tables))
    for word in ("daily_sales", "promotion", "live-stream", "stock-out", "on-time", "clearance", "fraud",
                 "compliance", "label lag"):
        assert word in text
