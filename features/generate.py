"""Synthetic cross-border commerce data: the five canonical tables with every driver of DESIGN.md.

`generate_tables` builds merchants, skus, daily_sales, shipments and orders in memory (scales tiny, small,
medium); `generate_to_store` writes them to the offline store, streaming daily_sales and orders chunk by
chunk for scales marked `stream` (large) so memory stays bounded.

Determinism: every table (and every chunk of daily_sales/orders) draws from its own numpy Generator seeded
with (seed, stream, chunk); ids are positional. Scenarios only transform random numbers that are always
drawn, and time-dependent draws run day by day, so a scenario run equals the plain run before its date.

Outcomes (late, transit days, fraud and compliance labels) are the eventual truth; the columns
delivered_at, fraud_reported_at and compliance_reported_at say when each becomes known, so consumers
filter on them for an as-of view.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from features.calendar import MarketCalendar, congestion_index, market_calendar
from features.schema import CATEGORIES, MARKET_REGION, MARKETS, REGIONS, SKU_TIERS, TABLES
from tradecast.config import ConfigModel, load_config
from tradecast.errors import TradecastError

TABLE_ORDER = ("merchants", "skus", "daily_sales", "shipments", "orders")
SCENARIOS = ("red_sea", "new_live_channel", "fraud_ring")
Progress = Callable[[str, float], None]


# ----------------------------------------------------------------------------------------------- config
class ScaleConfig(ConfigModel):
    """Size of one scale."""

    merchants: int = Field(gt=0)
    skus: int = Field(gt=0)
    days: int = Field(ge=28)
    shipments: int = Field(gt=0)
    orders: int = Field(gt=0)
    stream: bool = False  # write daily_sales and orders chunk by chunk (bounded memory)


def _known_categories(v: list[str]) -> list[str]:
    bad = [c for c in v if c not in CATEGORIES]
    if bad:
        raise ValueError(f"unknown categories {bad}; choose from {list(CATEGORIES)}")
    return v


class RedSeaConfig(ConfigModel):
    description: str = ""
    days_before_end: int = Field(gt=0)
    extra_days_min: float = 7.0
    extra_days_max: float = 14.0
    extra_sigma: float = 0.25  # lognormal spread of the added days


class NewLiveChannelConfig(ConfigModel):
    description: str = ""
    days_before_end: int = Field(gt=0)
    categories: list[str]
    rate_multiplier: float = Field(3.0, gt=0)
    lift_multiplier: float = Field(1.8, gt=0)
    extra_series_share: float = Field(0.5, ge=0, le=1)

    @field_validator("categories")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return _known_categories(v)


class FraudRingConfig(ConfigModel):
    description: str = ""
    days_before_end: int = Field(gt=0)
    share_of_orders: float = Field(0.015, ge=0, le=0.2)
    devices: int = Field(8, gt=0)
    merchants: int = Field(3, gt=0)
    categories: list[str]

    @field_validator("categories")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return _known_categories(v)


class ScenariosConfig(ConfigModel):
    red_sea: RedSeaConfig
    new_live_channel: NewLiveChannelConfig
    fraud_ring: FraudRingConfig


class DemandConfig(ConfigModel):
    tier_share: dict[str, float]
    tier_base_units: dict[str, float]
    base_sigma: float = Field(0.5, ge=0)
    noise_shape: float = Field(28.0, gt=0)
    live_median_lift: float = Field(5.0, gt=0)
    live_lift_sigma: float = Field(0.45, ge=0)
    live_elasticity: float = Field(10.4, ge=0)
    stock_out_episodes_per_year: float = Field(2.0, ge=0)
    launched_in_period_share: float = Field(0.2, ge=0, le=1)

    @field_validator("tier_share", "tier_base_units")
    @classmethod
    def _tiers(cls, v: dict[str, float]) -> dict[str, float]:
        if sorted(v) != sorted(SKU_TIERS):
            raise ValueError(f"needs exactly the tiers {list(SKU_TIERS)}")
        return v


class TransitConfig(ConfigModel):
    promise_buffer: dict[str, float]
    inspection_rate: float = Field(0.05, ge=0, le=1)
    delay_shock_rate: float = Field(0.06, ge=0, le=1)
    weather_shock_rate: float = Field(0.15, ge=0, le=1)


class RiskConfig(ConfigModel):
    fraud_burst_share: float = Field(0.009, ge=0, le=0.2)
    brushing_share: float = Field(0.006, ge=0, le=0.2)
    unusual_amount_share: float = Field(0.0025, ge=0, le=0.2)
    background_fraud_share: float = Field(0.002, ge=0, le=0.2)
    undervalued_share: float = Field(0.03, ge=0, le=0.5)
    hs_mismatch_share: float = Field(0.015, ge=0, le=0.5)


class DataConfig(ConfigModel):
    """configs/data.yaml: scales, default period, scenario dates and driver figures."""

    end: date
    default_scale: str = "small"
    sku_chunk: int = Field(400, gt=0)
    order_window_days: int = Field(92, gt=0)
    scales: dict[str, ScaleConfig]
    scenarios: ScenariosConfig
    demand: DemandConfig
    transit: TransitConfig
    risk: RiskConfig


def load_data_config(path: Path | None = None) -> DataConfig:
    """Load configs/data.yaml (or `path`) with TRADECAST_DATA__* overrides."""
    return load_config(DataConfig, "data", path)


# ---------------------------------------------------------------------------------------- domain tables
# Industrial clusters: the China hub they ship from and the categories their merchants sell.
CLUSTERS: dict[str, tuple[str, float, dict[str, float]]] = {
    "shenzhen_3c": ("CN-SZX", 0.30, {"electronics_3c": 0.55, "smart_home": 0.30, "toys": 0.15}),
    "hangzhou_apparel": ("CN-HGH", 0.25, {"apparel": 0.70, "mother_baby": 0.15, "beauty": 0.15}),
    "yiwu_small_goods": ("CN-YIW", 0.25, {"home": 0.35, "toys": 0.30, "mother_baby": 0.15, "apparel": 0.10, "food": 0.10}),
    "guangzhou_beauty": ("CN-CAN", 0.20, {"beauty": 0.60, "health": 0.25, "food": 0.15}),
}
MARKETPLACES: dict[str, tuple[float, tuple[str, ...], float]] = {
    # name: (share of merchants, markets it serves, share of its series that run live streams)
    "shopee": (0.20, ("ID", "TH", "VN", "PH", "MY", "SG", "BR"), 0.40),
    "lazada": (0.10, ("ID", "TH", "VN", "PH", "MY", "SG"), 0.35),
    "tiktok_shop": (0.20, ("ID", "TH", "VN", "PH", "MY", "SG", "US", "GB"), 0.75),
    "amazon": (0.24, ("US", "DE", "FR", "ES", "IT", "NL", "GB", "AE", "SA", "MX", "BR"), 0.08),
    "temu": (0.10, ("US", "DE", "FR", "ES", "IT", "NL", "GB", "MX", "BR"), 0.05),
    "noon": (0.08, ("SA", "AE"), 0.15),
    "mercado_libre": (0.08, ("BR", "MX"), 0.10),
}
SIZE_TIERS = ("small", "medium", "large", "brand")
SIZE_SHARE = np.array([0.50, 0.30, 0.15, 0.05])
SIZE_SKU_WEIGHT = np.array([1.0, 2.5, 6.0, 4.0])
SIZE_VIEWERS = np.array([800.0, 2500.0, 8000.0, 15000.0])
SIZE_WAREHOUSE_SHARE = np.array([0.12, 0.28, 0.45, 0.55])
CATEGORY_PRICE = {"beauty": 12.0, "apparel": 18.0, "electronics_3c": 35.0, "home": 15.0, "smart_home": 40.0,
                  "mother_baby": 14.0, "health": 16.0, "food": 8.0, "toys": 12.0}
CATEGORY_VALUE_PER_KG = {"beauty": 45.0, "apparel": 30.0, "electronics_3c": 120.0, "home": 12.0, "smart_home": 60.0,
                         "mother_baby": 20.0, "health": 50.0, "food": 10.0, "toys": 18.0}
SEASONAL_SHARE = {"beauty": 0.2, "apparel": 0.5, "electronics_3c": 0.15, "home": 0.25, "smart_home": 0.15,
                  "mother_baby": 0.15, "health": 0.2, "food": 0.3, "toys": 0.45}
SEASON_PEAK_DOY = {"beauty": 170, "apparel": 320, "electronics_3c": 330, "home": 310, "smart_home": 330,
                   "mother_baby": 150, "health": 15, "food": 25, "toys": 345}
MARKET_SIZE = {"ID": 1.3, "TH": 1.0, "VN": 0.9, "PH": 0.9, "MY": 0.8, "SG": 0.4, "DE": 1.0, "FR": 0.8, "ES": 0.6,
               "IT": 0.6, "NL": 0.4, "GB": 0.9, "US": 1.6, "SA": 0.7, "AE": 0.5, "BR": 1.1, "MX": 0.8}
# How well a category sells in a region (SEA: beauty/apparel; EU/US: electronics, smart home; ME: beauty, fragrance).
REGION_FIT = {
    "sea": {"beauty": 1.4, "apparel": 1.3, "mother_baby": 1.2, "food": 1.2, "electronics_3c": 0.9, "smart_home": 0.7},
    "europe": {"electronics_3c": 1.2, "smart_home": 1.4, "home": 1.2, "health": 1.1, "food": 0.6},
    "north_america": {"electronics_3c": 1.2, "smart_home": 1.3, "toys": 1.2, "home": 1.1, "food": 0.6},
    "middle_east": {"beauty": 1.5, "apparel": 1.1, "electronics_3c": 1.1, "food": 0.8},
    "latam": {"electronics_3c": 1.1, "beauty": 1.1, "apparel": 1.1, "smart_home": 0.8},
}
# SEA and LatAm buyers are price sensitive; EU/US less so; the Middle East least (high order value).
REGION_ELASTICITY = {"sea": 2.7, "europe": 1.7, "north_america": 1.6, "middle_east": 1.4, "latam": 2.3}
REGION_PRICE_LEVEL = {"sea": 0.9, "europe": 1.15, "north_america": 1.1, "middle_east": 1.25, "latam": 1.05}
REGION_GROWTH = {"sea": 0.25, "europe": 0.08, "north_america": 0.10, "middle_east": 0.15, "latam": 0.20}
REGION_QTY = {"sea": 0.3, "europe": 0.35, "north_america": 0.35, "middle_east": 0.9, "latam": 0.3}
WEEKLY = {  # Monday..Sunday
    "sea": [1.04, 1.00, 0.97, 0.95, 0.93, 1.00, 1.11],
    "europe": [1.10, 1.05, 1.00, 0.97, 0.90, 0.86, 1.12],
    "north_america": [1.08, 1.04, 1.00, 0.98, 0.93, 0.92, 1.05],
    "middle_east": [0.95, 0.95, 1.00, 1.08, 1.12, 0.95, 0.95],
    "latam": [1.08, 1.04, 1.00, 0.98, 0.95, 0.90, 1.05],
}
# HS catalogue per category: (6-digit code, goods description, dangerous goods / control-list item).
HS_CATALOG: dict[str, list[tuple[str, str, bool]]] = {
    "beauty": [("330499", "skin care cream", False), ("330410", "lipstick", False), ("330510", "shampoo", False),
               ("330530", "hair spray aerosol", True), ("330300", "perfume flammable liquid", True)],
    "apparel": [("610910", "cotton t-shirt", False), ("611030", "knitted sweater", False),
                ("620462", "women's trousers", False), ("620520", "men's shirt", False), ("611595", "socks", False)],
    "electronics_3c": [("851762", "bluetooth earphones", False), ("851830", "wired headphones", False),
                       ("847160", "computer keyboard", False), ("850760", "lithium battery pack", True),
                       ("850440", "power bank lithium battery", True), ("852589", "action camera lithium battery", True)],
    "home": [("392410", "plastic kitchenware", False), ("691200", "ceramic tableware", False),
             ("940520", "desk lamp", False), ("630231", "cotton bed linen", False), ("821192", "kitchen knife set", True)],
    "smart_home": [("851660", "smart rice cooker", False), ("853110", "smart alarm sensor", False),
                   ("852589", "wifi security camera", False), ("940540", "smart light strip", False),
                   ("850440", "smart plug charger", False)],
    "mother_baby": [("961900", "baby diapers", False), ("611120", "baby garments", False),
                    ("392490", "baby feeding bottle", False), ("401490", "silicone pacifier", False)],
    "health": [("210690", "vitamin supplement", False), ("300490", "herbal medicine", False),
               ("901890", "massage device", False), ("902519", "digital thermometer", False)],
    "food": [("090210", "green tea", False), ("190590", "biscuits", False), ("200899", "dried fruit", False),
             ("170490", "candy", False), ("040690", "cheese snack chilled", False)],
    "toys": [("950300", "plastic toy", False), ("950490", "board game", False), ("950691", "fitness toy", False),
             ("950300", "remote control car lithium battery", True), ("950510", "christmas decoration", False)],
}
# HS chapters (first two digits) that fit each category; a declared code outside them is misclassified.
CATEGORY_HS_CHAPTERS: dict[str, tuple[str, ...]] = {
    "beauty": ("33", "34"), "apparel": ("61", "62"), "electronics_3c": ("84", "85"),
    "home": ("39", "69", "94", "63", "82", "73"), "smart_home": ("85", "94"),
    "mother_baby": ("96", "61", "39", "40", "95"), "health": ("21", "30", "90", "33"),
    "food": ("04", "09", "17", "19", "20", "21"), "toys": ("95",),
}
# Low-duty codes used to misdeclare goods; none fits any category above.
MISDECLARED_HS = np.array(["490199", "481910", "442199", "830249", "701399"], dtype=object)
CONTROL_KEYWORDS = ("lithium battery", "aerosol", "knife", "power bank", "flammable")

# Logistics: China hubs, overseas warehouses (serve their own region), base line-haul days excluding customs.
CN_HUBS = ("CN-SZX", "CN-HGH", "CN-YIW", "CN-CAN")
WAREHOUSES: dict[str, tuple[str, ...]] = {
    "MY-KUL": ("MY", "SG", "ID", "PH"), "TH-BKK": ("TH", "VN"), "DE-FRA": ("DE", "FR", "NL"),
    "PL-WAW": ("DE", "IT", "ES", "FR"), "US-LAX": ("US",), "AE-DXB": ("AE", "SA"), "MX-MEX": ("MX",),
}
ORIGINS = CN_HUBS + tuple(WAREHOUSES)
CN_MODE_SHARE = {  # express, air, sea, rail
    "sea": (0.45, 0.35, 0.20, 0.0), "europe": (0.25, 0.35, 0.22, 0.18), "north_america": (0.30, 0.35, 0.35, 0.0),
    "middle_east": (0.30, 0.45, 0.25, 0.0), "latam": (0.25, 0.50, 0.25, 0.0),
}
MODE_ORDER = ("express", "air", "sea", "rail")
CN_BASE_DAYS = {  # express, air, sea, rail
    "sea": (6.0, 8.0, 16.0, np.nan), "europe": (8.0, 11.0, 36.0, 19.0), "north_america": (7.0, 10.0, 30.0, np.nan),
    "middle_east": (7.0, 9.0, 26.0, np.nan), "latam": (11.0, 14.0, 40.0, np.nan),
}
WAREHOUSE_BASE_DAYS = {"sea": 2.6, "europe": 4.3, "north_america": 3.3, "middle_east": 2.6, "latam": 4.3}
MARKET_EXTRA_DAYS = {"ID": 1.0, "PH": 1.0, "VN": 0.5, "GB": 1.0, "ES": 0.5, "IT": 0.5, "BR": 2.0, "SA": 0.5}
MODE_WEIGHT_KG = {"express": (1.2, 0.8), "air": (25.0, 1.0), "sea": (800.0, 0.9), "rail": (500.0, 0.8)}
MODE_CONGESTION = {"express": 0.15, "air": 0.25, "sea": 0.12, "rail": 0.10}
MODE_SHOCK_DAYS = {"express": 2.0, "air": 2.5, "sea": 5.0, "rail": 3.0}
MODE_NOISE = {"express": 0.07, "air": 0.07, "sea": 0.05, "rail": 0.06}
# (carrier, share, speed factor: > 1 is slower)
CARRIERS: dict[str, list[tuple[str, float, float]]] = {
    "express": [("SF Express", 0.2, 0.88), ("DHL", 0.2, 0.86), ("YunExpress", 0.25, 1.06), ("4PX", 0.2, 1.12),
                ("Cainiao", 0.15, 1.0)],
    "air": [("Cainiao", 0.3, 1.0), ("YunExpress", 0.25, 1.08), ("4PX", 0.2, 1.13), ("SF Express", 0.15, 0.9),
            ("DHL", 0.1, 0.86)],
    "sea": [("Maersk", 0.35, 0.95), ("COSCO", 0.4, 1.0), ("ONE", 0.25, 1.07)],
    "rail": [("China Railway Express", 0.7, 1.0), ("Cainiao", 0.3, 1.08)],
}
LOCAL_CARRIERS: dict[str, list[tuple[str, float, float]]] = {
    "sea": [("J&T Express", 0.45, 1.1), ("Ninja Van", 0.35, 1.0), ("Lazada Logistics", 0.2, 0.92)],
    "europe": [("DHL", 0.4, 0.92), ("DPD", 0.35, 1.0), ("GLS", 0.25, 1.1)],
    "north_america": [("UPS", 0.5, 0.93), ("USPS", 0.5, 1.08)],
    "middle_east": [("Aramex", 0.6, 1.0), ("SMSA", 0.4, 1.12)],
    "latam": [("Estafeta", 0.6, 1.06), ("DHL", 0.4, 0.92)],
}
# Buyers: first IP octet per market (IPs are synthetic, not real allocations) and payment methods per region.
IP_FIRST_OCTET = {"ID": 36, "TH": 49, "VN": 14, "PH": 112, "MY": 175, "SG": 119, "DE": 84, "FR": 90, "ES": 83,
                  "IT": 79, "NL": 145, "GB": 86, "US": 73, "SA": 188, "AE": 94, "BR": 177, "MX": 187}
PAYMENTS = {
    "sea": (("e_wallet", 0.40), ("cod", 0.30), ("card", 0.20), ("bank_transfer", 0.10)),
    "europe": (("card", 0.55), ("paypal", 0.30), ("bnpl", 0.15)),
    "north_america": (("card", 0.65), ("paypal", 0.25), ("bnpl", 0.10)),
    "middle_east": (("card", 0.50), ("cod", 0.40), ("e_wallet", 0.10)),
    "latam": (("card", 0.45), ("pix", 0.30), ("bank_transfer", 0.15), ("e_wallet", 0.10)),
}
HOUR_WEIGHTS = np.array([2, 1.2, 0.8, 0.5, 0.4, 0.5, 1, 2, 3, 3.5, 4, 4.5, 5, 4.5, 4, 4, 4.2, 4.5, 5, 6, 7, 7.5, 6, 4])

STREAMS = {"merchants": 1, "skus": 2, "series": 3, "demand": 4, "shipments": 5, "weather": 6, "buyers": 7,
           "orders": 8, "ring": 9, "ring_orders": 10}


def _rng(seed: int, stream: str, *keys: int) -> np.random.Generator:
    """An independent Generator per (seed, stream, chunk...): tables never share random numbers."""
    return np.random.default_rng([seed, STREAMS[stream], *keys])


def _pick_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a [n, k] probability matrix."""
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(len(probs))
    return np.minimum((cum < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def _ids(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """Positional string ids such as M00012, as an object array."""
    return (prefix + pd.Series(np.asarray(numbers), dtype="int64").astype(str).str.zfill(width)).to_numpy(object)


def _episodes(start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Mark [t, t+length) after every start along axis 0 (days), vectorised with a running max."""
    t = np.arange(start.shape[0]).reshape((-1,) + (1,) * (start.ndim - 1))
    end = np.where(start, t + length, -1)
    return np.maximum.accumulate(end, axis=0) > t


def _poisson_inverse(lam: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Poisson(lam) draws from uniforms `u`, one uniform per cell (so a cell's draw never moves another's).

    Exact inversion for lam < 30; above, the Cornish-Fisher normal approximation (error far below the noise).
    """
    lam = np.asarray(lam, dtype=np.float64)
    out = np.zeros(lam.shape)
    small = lam < 30.0
    ls, us = lam[small], u[small]
    k = np.zeros(ls.shape)
    p = np.exp(-ls)
    cdf = p.copy()
    active = np.flatnonzero(us > cdf)
    i = 0
    while active.size:
        i += 1
        k[active] += 1
        p[active] *= ls[active] / i
        cdf[active] += p[active]
        active = active[us[active] > cdf[active]]
    out[small] = k
    if (~small).any():
        from scipy.special import ndtri

        lb = lam[~small]
        z = ndtri(np.clip(u[~small], 1e-12, 1 - 1e-12))
        out[~small] = np.maximum(0.0, np.floor(lb + np.sqrt(lb) * z + (z * z - 1) / 6.0 + 0.5))
    return out


def hs_matches_category(hs_codes: pd.Series | np.ndarray, categories: pd.Series | np.ndarray) -> np.ndarray:
    """True where a 6-digit HS code's chapter fits the product category (False = likely misclassified)."""
    hs = pd.Series(np.asarray(hs_codes, dtype=object)).astype("string").str[:2]
    cat = pd.Series(np.asarray(categories, dtype=object)).astype("string")
    pairs = {f"{c}|{ch}" for c, chs in CATEGORY_HS_CHAPTERS.items() for ch in chs}
    return (cat + "|" + hs).isin(pairs).fillna(False).to_numpy(bool)


def has_control_keyword(descriptions: pd.Series | np.ndarray) -> np.ndarray:
    """True where a goods description mentions a control-list / dangerous-goods keyword."""
    text = pd.Series(np.asarray(descriptions, dtype=object)).astype("string").str.lower()
    return text.str.contains("|".join(CONTROL_KEYWORDS), regex=True).fillna(False).to_numpy(bool)


# ------------------------------------------------------------------------------------------------ world
@dataclass
class World:
    """Entities and per-series parameters shared by all tables of one run."""

    cfg: DataConfig
    scale: ScaleConfig
    seed: int
    start: pd.Timestamp
    n_days: int
    dates: pd.DatetimeIndex
    calendar: MarketCalendar
    scenario: str | None
    scenario_day: int | None  # index into dates of the scenario start
    merchants: pd.DataFrame
    skus: pd.DataFrame
    sku_desc: np.ndarray
    # series (sku x market) arrays
    s_sku: np.ndarray
    s_market: np.ndarray
    s_region: np.ndarray
    s_base: np.ndarray
    s_price: np.ndarray
    s_elasticity: np.ndarray
    s_promo_sens: np.ndarray
    s_season_amp: np.ndarray
    s_season_peak: np.ndarray
    s_ramp_tau: np.ndarray
    s_decline_start: np.ndarray
    s_decline_scale: np.ndarray
    s_live_u: np.ndarray
    s_live_share: np.ndarray
    s_live_rate: np.ndarray
    s_viewers: np.ndarray
    s_stockout_rate: np.ndarray

    @property
    def end(self) -> pd.Timestamp:
        return self.dates[-1]


def _resolve_period(cfg: DataConfig, scale_cfg: ScaleConfig, start: date | None, days: int | None) -> tuple[pd.Timestamp, int]:
    n_days = int(days) if days is not None else scale_cfg.days
    if n_days < 28:
        raise TradecastError(f"--days must be at least 28 (got {n_days})")
    if start is None:
        first = pd.Timestamp(cfg.end) - pd.Timedelta(days=n_days - 1)
    else:
        first = pd.Timestamp(start)
    return first.normalize(), n_days


def scenario_start(cfg: DataConfig, scenario: str | None, start: date | None = None, days: int | None = None,
                   scale: str | None = None) -> pd.Timestamp | None:
    """First day of a scenario's shift: `days_before_end` before the period's last day (None: no scenario).

    A period shorter than the offset puts the start half-way through it.
    """
    if scenario is None:
        return None
    if scenario not in SCENARIOS:
        raise TradecastError(f"unknown scenario '{scenario}': choose one of {', '.join(SCENARIOS)}")
    scale_cfg = cfg.scales.get(scale or cfg.default_scale) or next(iter(cfg.scales.values()))
    first, n_days = _resolve_period(cfg, scale_cfg, start, days)
    offset = getattr(cfg.scenarios, scenario).days_before_end
    day = n_days - offset if offset < n_days else n_days // 2
    return first + pd.Timedelta(days=day)


def _scale(cfg: DataConfig, scale: str) -> ScaleConfig:
    if scale not in cfg.scales:
        raise TradecastError(f"unknown scale '{scale}': choose one of {', '.join(cfg.scales)}")
    return cfg.scales[scale]


def build_world(cfg: DataConfig, scale: str, seed: int, scenario: str | None = None, start: date | None = None,
                days: int | None = None) -> World:
    """Merchants, SKUs and the per-series demand parameters for one run."""
    scale_cfg = _scale(cfg, scale)
    if seed < 0:
        raise TradecastError(f"--seed must be >= 0 (got {seed})")
    first, n_days = _resolve_period(cfg, scale_cfg, start, days)
    scen_ts = scenario_start(cfg, scenario, first.date(), n_days)
    dates = pd.date_range(first, periods=n_days, freq="D")
    merchants = _merchants(cfg, scale_cfg, seed, first, n_days)
    skus, sku_desc = _skus(cfg, scale_cfg, seed, merchants, first, n_days)
    world = World(cfg=cfg, scale=scale_cfg, seed=seed, start=first, n_days=n_days, dates=dates,
                  calendar=market_calendar(dates), scenario=scenario,
                  scenario_day=None if scen_ts is None else int((scen_ts - first).days),
                  merchants=merchants, skus=skus, sku_desc=sku_desc,
                  **_series(cfg, seed, merchants, skus))
    return world


def _merchants(cfg: DataConfig, sc: ScaleConfig, seed: int, first: pd.Timestamp, n_days: int) -> pd.DataFrame:
    rng = _rng(seed, "merchants")
    n = sc.merchants
    names = list(CLUSTERS)
    cluster = rng.choice(len(names), size=n, p=np.array([CLUSTERS[c][1] for c in names]))
    mkts = list(MARKETPLACES)
    mp_share = np.array([MARKETPLACES[m][0] for m in mkts])
    marketplace = rng.choice(len(mkts), size=n, p=mp_share / mp_share.sum())
    size = rng.choice(len(SIZE_TIERS), size=n, p=SIZE_SHARE)
    # Registered before the period mostly; a few join during its first half.
    age = np.where(rng.random(n) < 0.9, rng.uniform(60, 3000, n), -rng.uniform(0, n_days / 2, n))
    registered = first - pd.to_timedelta(np.round(age), unit="D")
    tenure_years = np.clip(age, 0, None) / 365.0
    quality = rng.beta(5, 2.2, n) + 0.04 * np.array([0, 1, 2, 3])[size] + 0.015 * tenure_years - 0.05
    quality = np.clip(quality, 0.0, 1.0)
    noisy = quality + rng.normal(0, 0.04, n)
    grade_idx = np.searchsorted(-np.array([0.82, 0.70, 0.57, 0.44]), -noisy, side="right")
    return pd.DataFrame({
        "merchant_id": _ids("M", np.arange(n), 5),
        "size_tier": np.array(SIZE_TIERS, dtype=object)[size],
        "registered_at": registered.astype("datetime64[ns]"),
        "home_cluster": np.array(names, dtype=object)[cluster],
        "marketplace": np.array(mkts, dtype=object)[marketplace],
        "credit_grade": np.array(list("ABCDE"), dtype=object)[grade_idx],
        "credit_quality": np.round(quality, 4),
    })


def _skus(cfg: DataConfig, sc: ScaleConfig, seed: int, merchants: pd.DataFrame, first: pd.Timestamp,
          n_days: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = _rng(seed, "skus")
    n, n_m = sc.skus, len(merchants)
    size = pd.Categorical(merchants["size_tier"], categories=SIZE_TIERS).codes
    w = SIZE_SKU_WEIGHT[size]
    owner = np.concatenate([np.arange(min(n, n_m)), rng.choice(n_m, size=max(0, n - n_m), p=w / w.sum())])
    owner = np.sort(owner)[:n]
    cluster_names = list(CLUSTERS)
    cluster = pd.Categorical(merchants["home_cluster"], categories=cluster_names).codes[owner]
    cat_probs = np.array([[CLUSTERS[c][2].get(cat, 0.0) for cat in CATEGORIES] for c in cluster_names])
    cat = _pick_rows(rng, cat_probs[cluster])
    cat_names = np.array(CATEGORIES, dtype=object)[cat]
    median_price = np.array([CATEGORY_PRICE[c] for c in CATEGORIES])[cat]
    price = np.round(np.maximum(0.5, median_price * np.exp(rng.normal(0, 0.5, n))), 2)
    tiers = np.array(SKU_TIERS, dtype=object)
    tier_p = np.array([cfg.demand.tier_share[t] for t in SKU_TIERS])
    tier = tiers[rng.choice(3, size=n, p=tier_p / tier_p.sum())]
    new = rng.random(n) < cfg.demand.launched_in_period_share
    launch_offset = np.where(new, rng.uniform(0, max(1, n_days - 45), n), -rng.uniform(30, 900, n))
    launch = first + pd.to_timedelta(np.round(launch_offset), unit="D")
    seasonal = rng.random(n) < np.array([SEASONAL_SHARE[c] for c in CATEGORIES])[cat]
    hs = np.empty(n, dtype=object)
    desc = np.empty(n, dtype=object)
    dg = np.zeros(n, dtype=bool)
    u = rng.random(n)
    for ci, c in enumerate(CATEGORIES):
        rows = np.flatnonzero(cat == ci)
        options = HS_CATALOG[c]
        pick = np.minimum((u[rows] * len(options)).astype(int), len(options) - 1)
        hs[rows] = np.array([o[0] for o in options], dtype=object)[pick]
        desc[rows] = np.array([o[1] for o in options], dtype=object)[pick]
        dg[rows] = np.array([o[2] for o in options])[pick]
    u2 = rng.random(n)
    cold = (cat_names == "food") & ((np.char.find(desc.astype(str), "chilled") >= 0) | (u2 < 0.15))
    halal_p = np.where(np.isin(cat_names, ["food", "beauty", "health"]), 0.45,
                       np.where(cat_names == "mother_baby", 0.2, 0.03))
    halal = rng.random(n) < halal_p
    high_value = price >= np.where(np.isin(cat_names, ["electronics_3c", "smart_home"]), 70.0, 50.0)
    skus = pd.DataFrame({
        "sku_id": _ids("S", np.arange(n), 6),
        "merchant_id": merchants["merchant_id"].to_numpy(object)[owner],
        "category": cat_names,
        "price": price,
        "launch_date": launch.astype("datetime64[ns]"),
        "tier": tier,
        "seasonal": seasonal,
        "hs_code": hs,
        "cold_chain": cold,
        "halal_certified": halal,
        "high_value": high_value,
        "dangerous_goods": dg,
    })
    return skus, desc


def _series(cfg: DataConfig, seed: int, merchants: pd.DataFrame, skus: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each SKU sells in 1-4 markets of its marketplace, preferring markets where its category fits."""
    rng = _rng(seed, "series")
    n = len(skus)
    m_idx = pd.Index(merchants["merchant_id"]).get_indexer(skus["merchant_id"])
    marketplace = merchants["marketplace"].to_numpy(object)[m_idx]
    size = pd.Categorical(merchants["size_tier"], categories=SIZE_TIERS).codes[m_idx]
    cat = skus["category"].to_numpy(object)
    allowed = np.array([[mk in MARKETPLACES[mp][1] for mk in MARKETS] for mp in marketplace])
    fit = np.array([[REGION_FIT[MARKET_REGION[mk]].get(c, 1.0) for mk in MARKETS] for c in cat])
    size_w = np.array([MARKET_SIZE[mk] for mk in MARKETS])
    weight = np.where(allowed, fit * size_w, 0.0)
    k = np.minimum(rng.choice(4, size=n, p=[0.3, 0.3, 0.25, 0.15]) + 1, allowed.sum(axis=1))
    # Gumbel top-k: weighted sampling without replacement, one row per SKU.
    with np.errstate(divide="ignore"):
        score = np.log(weight) + rng.gumbel(size=weight.shape)
    rank = np.argsort(np.argsort(-score, axis=1, kind="stable"), axis=1, kind="stable")
    chosen = rank < k[:, None]
    s_sku, s_market = np.nonzero(chosen)  # ordered by sku, then market
    n_s = len(s_sku)
    region_names = np.array([MARKET_REGION[m] for m in MARKETS], dtype=object)
    s_region_name = region_names[s_market]
    s_region = pd.Categorical(s_region_name, categories=REGIONS).codes.astype(np.int64)
    tier = skus["tier"].to_numpy(object)[s_sku]
    price = skus["price"].to_numpy()[s_sku]
    cat_s = cat[s_sku]
    median_price = np.array([CATEGORY_PRICE[c] for c in cat_s])
    tier_base = np.array([cfg.demand.tier_base_units[t] for t in tier])
    base = (tier_base * np.exp(rng.normal(0, cfg.demand.base_sigma, n_s)) * size_w[s_market]
            * fit[s_sku, s_market] * (price / median_price) ** -0.5)
    level = np.array([REGION_PRICE_LEVEL[r] for r in s_region_name])
    s_price = price * level * np.exp(rng.normal(0, 0.05, n_s))
    elasticity = np.array([REGION_ELASTICITY[r] for r in s_region_name]) * np.exp(rng.normal(0, 0.15, n_s))
    promo_sens = np.exp(rng.normal(0, 0.1, n_s))
    seasonal = skus["seasonal"].to_numpy()[s_sku]
    amp = np.where(seasonal, rng.uniform(0.4, 0.7, n_s), rng.uniform(0.03, 0.12, n_s))
    amp = amp * np.where(s_region_name == "sea", 0.6, 1.0)  # tropical markets: weaker yearly cycle
    peak = np.array([SEASON_PEAK_DOY[c] for c in cat_s]) + rng.normal(0, 12, n_s)
    peak = peak + np.where((MARKETS_ARR[s_market] == "BR") & seasonal, 182.0, 0.0)  # southern hemisphere
    ramp_tau = rng.uniform(10, 20, n_s)  # launch ramp: ~95% of the plateau after 4-8 weeks
    launch_day = skus["launch_date"].to_numpy("datetime64[D]").astype(np.int64)[s_sku]
    declines = rng.random(n_s) < np.where(tier == "hit", 0.1, 0.3)
    decline_start = np.where(declines, launch_day + rng.uniform(150, 500, n_s), np.inf)
    decline_scale = rng.uniform(150, 400, n_s)
    live_share = np.array([MARKETPLACES[mp][2] for mp in marketplace])[s_sku]
    live_share = np.minimum(1.0, live_share * np.where(s_region_name == "sea", 1.0, 0.5))
    live_rate = rng.uniform(0.02, 0.07, n_s) * np.where(marketplace[s_sku] == "tiktok_shop", 1.5, 1.0)
    viewers = SIZE_VIEWERS[size[s_sku]] * np.exp(rng.normal(0, 0.5, n_s))
    so_rate = cfg.demand.stock_out_episodes_per_year * np.where(tier == "long_tail", 0.5, 1.0) * rng.uniform(0.5, 1.5, n_s)
    return dict(s_sku=s_sku, s_market=s_market, s_region=s_region, s_base=base, s_price=s_price,
                s_elasticity=elasticity, s_promo_sens=promo_sens, s_season_amp=amp, s_season_peak=peak,
                s_ramp_tau=ramp_tau, s_decline_start=decline_start, s_decline_scale=decline_scale,
                s_live_u=rng.random(n_s), s_live_share=live_share, s_live_rate=live_rate, s_viewers=viewers,
                s_stockout_rate=so_rate)


MARKETS_ARR = np.array(MARKETS, dtype=object)
REGIONS_ARR = np.array(REGIONS, dtype=object)
WEEKLY_TAB = np.array([WEEKLY[r] for r in REGIONS]).T  # [weekday, region]


# ----------------------------------------------------------------------------------------- daily sales
def _demand_chunk(world: World, chunk: int, idx: np.ndarray) -> pd.DataFrame:
    """daily_sales rows of the series `idx` (one chunk of SKUs), ordered by sku, market, date.

    Random matrices are [day, series] and drawn whatever the scenario; counts come from one uniform per cell
    (`_poisson_inverse`), so a scenario changes exactly the cells it touches and nothing else.
    """
    cfg, dm = world.cfg, world.cfg.demand
    rng = _rng(world.seed, "demand", chunk)
    n_d, n_s = world.n_days, len(idx)
    dates = world.dates
    day_num = dates.to_numpy("datetime64[D]").astype(np.int64)[:, None]
    t_idx = np.arange(n_d)[:, None]
    sku = world.s_sku[idx]
    market = world.s_market[idx]
    region = world.s_region[idx]
    launch = world.skus["launch_date"].to_numpy("datetime64[D]").astype(np.int64)[sku]
    age = day_num - launch[None, :]
    valid = age >= 0

    cal = world.calendar
    inst = cal.instance[market].T  # [day, series]
    lift = cal.lift[market].T ** world.s_promo_sens[idx][None, :]
    promo_disc_day = cal.discounted[market].T

    # --- random draws (fixed shapes and order) ---
    u_inst = rng.random((max(1, len(cal.instance_names)), n_s))
    u_coupon = rng.random((n_d, n_s))
    u_step = rng.random((n_d, n_s))
    z_step = rng.standard_normal((n_d, n_s))
    u_live = rng.random((n_d, n_s))
    u_sess = rng.random((n_d, n_s))
    z_view = rng.standard_normal((n_d, n_s))
    z_lift = rng.standard_normal((n_d, n_s))
    u_live_disc = rng.random((n_d, n_s))
    u_so = rng.random((n_d, n_s))
    so_len = rng.integers(2, 10, (n_d, n_s))
    u_avail = rng.random((n_d, n_s))
    noise = rng.gamma(dm.noise_shape, 1.0 / dm.noise_shape, (n_d, n_s))
    u_count = rng.random((n_d, n_s))

    # --- planned covariates: list price (rare step changes), discounts, live sessions ---
    log_step = np.where(u_step < 1 / 90, 0.07 * z_step, 0.0)
    log_p = np.cumsum(log_step, axis=0)
    price = np.round(world.s_price[idx][None, :] * np.exp(log_p), 2)
    promo_disc = np.where(promo_disc_day, np.round(0.10 + 0.30 * u_inst[np.maximum(inst, 0), np.arange(n_s)[None, :]], 2), 0.0)
    coupon = np.where(u_coupon < 0.015, 0.05, np.where(u_coupon < 0.03, 0.10, 0.0))

    live_rate = world.s_live_rate[idx][None, :]
    eligible = world.s_live_u[idx] < world.s_live_share[idx]
    live = eligible[None, :] & (u_live < live_rate)
    lift_mult = np.ones((n_d, n_s))
    if world.scenario == "new_live_channel":
        sc = cfg.scenarios.new_live_channel
        hit_cat = np.isin(world.skus["category"].to_numpy(object)[sku], sc.categories)
        share_new = world.s_live_share[idx] + sc.extra_series_share * (1 - world.s_live_share[idx])
        eligible_new = world.s_live_u[idx] < share_new
        live_new = eligible_new[None, :] & (u_live < np.minimum(0.5, live_rate * sc.rate_multiplier))
        post = (t_idx >= world.scenario_day) & hit_cat[None, :]
        live = np.where(post, live_new, live)
        lift_mult = np.where(post, sc.lift_multiplier, 1.0)
    live &= valid
    sessions = np.where(live, 1 + (u_sess < 0.3) + (u_sess < 0.08), 0).astype(np.int64)
    viewers = np.where(live, np.round(world.s_viewers[idx][None, :] * sessions * np.exp(0.8 * z_view)), 0).astype(np.int64)
    live_disc = np.where(live, np.where(u_live_disc < 0.6, 0.0, np.where(u_live_disc < 0.85, 0.05, 0.10)), 0.0)
    seller_disc = np.maximum(promo_disc, coupon)
    discount = np.round(1 - (1 - seller_disc) * (1 - live_disc), 2)  # a live-stream price stacks on top

    # --- demand rate ---
    weekly = WEEKLY_TAB[dates.dayofweek.to_numpy()][:, region]
    doy = dates.dayofyear.to_numpy()[:, None]
    yearly = 1 + world.s_season_amp[idx][None, :] * np.cos(2 * np.pi * (doy - world.s_season_peak[idx][None, :]) / 365.25)
    years = (day_num - 19723) / 365.25  # years since 2024-01-01
    trend = np.exp(np.array([REGION_GROWTH[r] for r in REGIONS])[region][None, :] * years)
    ramp = 1 - np.exp(-(np.maximum(age, 0) + 1) / world.s_ramp_tau[idx][None, :])
    decline = np.exp(-np.maximum(0.0, day_num - world.s_decline_start[idx][None, :]) / world.s_decline_scale[idx][None, :])
    elasticity = world.s_elasticity[idx][None, :]
    price_effect = np.exp(-elasticity * log_p)
    # Event lifts already hold a typical 25% discount, so on event days a deeper (shallower) cut than that
    # lifts more (less); elsewhere coupons act with the ordinary elasticity. Live-stream cuts act far more.
    typical = np.where(promo_disc_day, 0.75, 1.0)
    disc_effect = ((1 - seller_disc) / typical) ** -elasticity
    live_disc_effect = (1 - live_disc) ** -dm.live_elasticity
    # Spike size: mostly explained by the audience (viewers), a little by chance; heavy tail from both.
    excess = (dm.live_median_lift * np.exp(0.6 * 0.8 * z_view + dm.live_lift_sigma * z_lift)
              * sessions.clip(1) ** 0.3 * lift_mult)
    after_live = np.zeros_like(live)
    after_live[1:] = live[:-1]
    dip = np.where(after_live & ~live, 0.85, 1.0)  # demand pulled forward by yesterday's stream: a small dip
    # Stream viewers buy on top of the shop's ordinary (or promotion) demand.
    uplift = lift * disc_effect * dip + np.where(live, excess * live_disc_effect, 0.0)
    rate = world.s_base[idx][None, :] * weekly * yearly * trend * ramp * decline * price_effect * uplift
    rate = np.where(valid, np.minimum(rate, 50_000.0), 0.0)

    # --- stock-outs: episodes of several days with small (often zero) stock ---
    so_start = valid & (u_so < world.s_stockout_rate[idx][None, :] / 365.0)
    stock_out = _episodes(so_start, so_len) & valid
    available = np.where(u_avail < 0.5, 0.0, np.floor(rate * 0.8 * (u_avail - 0.5)))

    demand = _poisson_inverse(rate * noise, u_count)
    units = np.where(stock_out, np.minimum(demand, available), demand)

    keep = valid.T.ravel()
    n_rows = int(keep.sum())
    sku_ids = world.skus["sku_id"].to_numpy(object)
    event_names = np.array(list(cal.instance_names) + [None], dtype=object)
    inst_pos = np.where(inst >= 0, inst, len(cal.instance_names))

    def flat(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.T).ravel()[keep]

    return pd.DataFrame({
        "date": np.tile(dates.to_numpy("datetime64[ns]"), n_s)[keep],
        "sku_id": np.repeat(sku_ids[sku], n_d)[keep],
        "market": np.repeat(MARKETS_ARR[market], n_d)[keep],
        "units": flat(units),
        "price": flat(price),
        "discount": flat(discount),
        "promotion_event": event_names[flat(inst_pos)],
        "live_sessions": flat(sessions),
        "live_viewers": flat(viewers),
        "stock_out": flat(stock_out),
    }, index=pd.RangeIndex(n_rows))


def _sku_chunks(world: World) -> list[np.ndarray]:
    """Series indices grouped in chunks of `sku_chunk` SKUs."""
    n_skus = len(world.skus)
    bounds = np.arange(0, n_skus + world.cfg.sku_chunk, world.cfg.sku_chunk)
    cuts = np.searchsorted(world.s_sku, bounds)
    return [np.arange(cuts[i], cuts[i + 1]) for i in range(len(cuts) - 1) if cuts[i + 1] > cuts[i]]


def iter_daily_sales(world: World) -> Iterator[pd.DataFrame]:
    """daily_sales chunk by chunk (bounded memory)."""
    for i, idx in enumerate(_sku_chunks(world)):
        yield _demand_chunk(world, i, idx)


# ------------------------------------------------------------------------------------------- shipments
def _weather(world: World) -> np.ndarray:
    """Bad-weather episodes [region (+ china), day]: storms, typhoons, snow; 2-7 days each."""
    rng = _rng(world.seed, "weather")
    n_r = len(REGIONS) + 1
    start = rng.random((world.n_days, n_r)) < 1 / 40
    length = rng.integers(2, 8, (world.n_days, n_r))
    return _episodes(start, length).T


def _shipments(world: World) -> pd.DataFrame:
    cfg, tc = world.cfg, world.cfg.transit
    rng = _rng(world.seed, "shipments")
    n = world.scale.shipments
    n_d = world.n_days
    # --- draws (fixed sizes and order; scenarios only transform them) ---
    w = world.s_base ** 0.6
    s = rng.choice(len(w), size=n, p=w / w.sum())
    congestion = congestion_index(world.dates)
    dow = world.dates.dayofweek.to_numpy()
    day_w = np.array([1.1, 1.1, 1.05, 1.05, 1.0, 0.6, 0.45])[dow] * (1 + 0.6 * congestion)
    day = np.sort(rng.choice(n_d, size=n, p=day_w / day_w.sum()))
    secs = rng.integers(7 * 3600, 21 * 3600, n)
    u_wh, u_whpick, u_mode, u_carrier = rng.random(n), rng.random(n), rng.random(n), rng.random(n)
    z_weight, z_value = rng.standard_normal(n), rng.standard_normal(n)
    u_under, u_under_size, u_mis, u_mis_code = rng.random(n), rng.random(n), rng.random(n), rng.random(n)
    u_channel, u_fast = rng.random(n), rng.random(n)
    z_clear, u_mis_clear = rng.standard_normal(n), rng.random(n)
    z_line, u_shock, u_shock_size = rng.standard_normal(n), rng.random(n), rng.random(n)
    u_red, z_red = rng.random(n), rng.standard_normal(n)

    sku = world.s_sku[s]
    market = world.s_market[s]
    region = world.s_region[s]
    region_name = REGIONS_ARR[region]
    m_idx = pd.Index(world.merchants["merchant_id"]).get_indexer(world.skus["merchant_id"].to_numpy(object)[sku])
    merchants = world.merchants
    size = pd.Categorical(merchants["size_tier"], categories=SIZE_TIERS).codes[m_idx]
    grade = merchants["credit_grade"].to_numpy(object)[m_idx]
    poor = np.isin(grade, ["D", "E"])
    good = np.isin(grade, ["A", "B"])
    category = world.skus["category"].to_numpy(object)[sku]
    hub = np.array([CLUSTERS[c][0] for c in merchants["home_cluster"]], dtype=object)[m_idx]
    tier = world.skus["tier"].to_numpy(object)[sku]

    # --- origin and mode: overseas warehouse (local express) or direct from a China hub ---
    wh_options = [[wh for wh, mk in WAREHOUSES.items() if m in mk] for m in MARKETS]
    n_wh = np.array([len(o) for o in wh_options])[market]
    p_wh = SIZE_WAREHOUSE_SHARE[size] + np.where(tier == "hit", 0.15, 0.0)
    use_wh = (n_wh > 0) & (u_wh < p_wh)
    wh_table = np.array([(o + [None, None])[:2] for o in wh_options], dtype=object)  # [market, 2]
    wh_pick = np.minimum((u_whpick * np.maximum(n_wh, 1)).astype(int), 1)
    origin = np.where(use_wh, wh_table[market, wh_pick], hub)
    mode_p = np.array([CN_MODE_SHARE[r] for r in REGIONS])[region]
    mode_idx = np.minimum((np.cumsum(mode_p, axis=1) < u_mode[:, None]).sum(axis=1), 3)
    mode_idx = np.where(use_wh, 0, mode_idx)
    mode = np.array(MODE_ORDER, dtype=object)[mode_idx]

    # --- carrier (quality differs within a mode) ---
    carrier = np.empty(n, dtype=object)
    speed = np.ones(n)
    groups = [("cn", m, CARRIERS[m]) for m in MODE_ORDER] + [("wh", r, LOCAL_CARRIERS[r]) for r in REGIONS]
    for kind, key, options in groups:
        rows = (~use_wh & (mode == key)) if kind == "cn" else (use_wh & (region_name == key))
        if not rows.any():
            continue
        shares = np.array([o[1] for o in options])
        pick = np.minimum((np.cumsum(shares / shares.sum())[None, :] < u_carrier[rows, None]).sum(axis=1), len(options) - 1)
        carrier[rows] = np.array([o[0] for o in options], dtype=object)[pick]
        speed[rows] = np.array([o[2] for o in options])[pick]

    # --- goods and declaration ---
    med_w = np.array([MODE_WEIGHT_KG[m][0] for m in MODE_ORDER])[mode_idx]
    sig_w = np.array([MODE_WEIGHT_KG[m][1] for m in MODE_ORDER])[mode_idx]
    weight = np.round(np.maximum(0.05, med_w * np.exp(sig_w * z_weight)), 3)
    value = weight * np.array([CATEGORY_VALUE_PER_KG[c] for c in CATEGORIES])[
        pd.Categorical(category, categories=CATEGORIES).codes] * np.exp(0.3 * z_value)
    undervalued = u_under < np.where(poor, 0.15, 0.04)
    declared = np.round(value * np.where(undervalued, 0.2 + 0.3 * u_under_size, 1.0), 2)
    mis = u_mis < np.where(poor, 0.10, 0.025)
    hs = np.where(mis, MISDECLARED_HS[np.minimum((u_mis_code * len(MISDECLARED_HS)).astype(int), len(MISDECLARED_HS) - 1)],
                  world.skus["hs_code"].to_numpy(object)[sku])
    dg = world.skus["dangerous_goods"].to_numpy()[sku]

    # --- customs channel, known at creation: inspection for risky declarations, fast lane for good merchants ---
    cross = ~use_wh
    p_insp = (tc.inspection_rate + 0.08 * poor + 0.2 * mis + 0.06 * dg + 0.05 * undervalued
              + 0.04 * (declared > 2000)) * cross
    inspection = u_channel < p_insp
    fast_ok = cross & good & (declared < 800) & ~mis & ~dg
    fast = ~inspection & fast_ok & (u_fast < 0.75)
    channel = np.where(inspection, "inspection", np.where(fast, "fast_lane", "standard")).astype(object)
    channel[~cross] = None
    cong = congestion[day]
    clear_med = np.where(inspection, 110.0, np.where(fast, 5.0, 28.0))
    clearance = clear_med * np.exp(0.45 * z_clear) * (1 + 0.5 * cong)
    clearance += mis * (24 + 48 * u_mis_clear)
    clearance = np.where(cross, np.round(np.clip(clearance, 0.5, 240.0), 1), 0.0)

    # --- transit ---
    cn_base = np.array([CN_BASE_DAYS[r] for r in REGIONS])  # [region, mode]
    base = np.where(use_wh, np.array([WAREHOUSE_BASE_DAYS[r] for r in REGIONS])[region],
                    cn_base[region, mode_idx])
    base = base + np.array([MARKET_EXTRA_DAYS.get(m, 0.0) for m in MARKETS])[market] * np.where(use_wh, 0.3, 1.0)
    noise_sd = np.array([MODE_NOISE[m] for m in MODE_ORDER])[mode_idx]
    cong_coef = np.array([MODE_CONGESTION[m] for m in MODE_ORDER])[mode_idx]
    line = base * speed * np.exp(noise_sd * z_line) * (1 + cong_coef * cong)
    small_parcel = np.isin(mode, ["express", "air"])
    line += small_parcel * 0.3 * np.clip(np.log(weight / med_w), -2, 3)
    # Warehouse overload: days when an origin handles far more than its usual volume.
    o_idx = pd.Index(ORIGINS).get_indexer(origin)
    counts = np.bincount(o_idx * n_d + day, minlength=len(ORIGINS) * n_d).reshape(len(ORIGINS), n_d)
    usual = counts.mean(axis=1, keepdims=True)
    # Small origins see noise, not overload: excess volume counts against a floor of 20 shipments a day.
    overload = np.clip((counts - 1.3 * usual) / np.maximum(usual, 20.0), 0, 3)[o_idx, day]
    line += np.where(small_parcel, 1.2, 0.6) * overload
    weather = _weather(world)
    bad = weather[region, day] | (cross & weather[len(REGIONS), day])
    line += 0.6 * bad
    p_shock = tc.delay_shock_rate * np.where(mode == "sea", 1.5, 1.0) + tc.weather_shock_rate * bad + 0.05 * cong
    red = np.zeros(n, dtype=bool)
    if world.scenario == "red_sea":
        rs = cfg.scenarios.red_sea
        red = (mode == "sea") & (region_name == "europe") & (day >= world.scenario_day)
        # the diversion adds one to two weeks (DESIGN); its spread grows with it (lognormal on the added days).
        # It never makes a shipment faster than the normal route (scaling the whole voyage by exp(sigma z) did:
        # some diverted sea shipments arrived in under 30 days, and the added time ran from -1 to +5 weeks).
        extra = (rs.extra_days_min + (rs.extra_days_max - rs.extra_days_min) * u_red) * np.exp(rs.extra_sigma * z_red)
        line = np.where(red, line + extra, line)
        p_shock = np.where(red, p_shock + 0.1, p_shock)
    shock = (u_shock < p_shock) * -np.log1p(-u_shock_size * 0.999) * np.array([MODE_SHOCK_DAYS[m] for m in MODE_ORDER])[mode_idx]
    transit = np.round(np.maximum(0.3, line + shock + clearance / 24.0), 2)

    # Promise per service level: lane x mode standard, premium carriers promise a little less.
    exp_clear = np.where(cross, 1.3, 0.0)
    buffer = np.array([tc.promise_buffer.get(m, 1.0) for m in MODE_ORDER])[mode_idx]
    buffer = np.where(use_wh, tc.promise_buffer.get("warehouse", 1.0), buffer)
    promised = np.round(base * (1 + 0.5 * (speed - 1)) + exp_clear + buffer)
    promised = np.maximum(promised, 1.0)

    created = world.start + pd.to_timedelta(day, unit="D") + pd.to_timedelta(secs, unit="s")
    created = created.to_numpy("datetime64[ns]")
    delivered = created + (transit * 86400).round().astype("timedelta64[s]")
    order = np.argsort(created, kind="stable")
    dest = MARKETS_ARR[market]
    df = pd.DataFrame({
        "shipment_id": _ids("SH", np.arange(n), 8),
        "created_at": created[order],
        "origin_warehouse": origin[order],
        "destination_market": dest[order],
        "lane": (pd.Series(origin[order]) + ">" + pd.Series(dest[order])).to_numpy(object),
        "mode": mode[order],
        "carrier": carrier[order],
        "weight_kg": weight[order],
        "declared_value": declared[order],
        "hs_code": hs[order],
        "category": category[order],
        "merchant_id": merchants["merchant_id"].to_numpy(object)[m_idx][order],
        "promised_days": promised[order].astype(np.float64),
        "customs_channel": channel[order],
        "clearance_hours": clearance[order],
        "transit_days": transit[order],
        "delivered_at": delivered[order].astype("datetime64[ns]"),
        "late": (transit > promised)[order],
    })
    return df


# ---------------------------------------------------------------------------------------------- orders
@dataclass
class Buyers:
    """The buyer pool, sorted by (country, account creation) so eligible buyers form a prefix per market."""

    country: np.ndarray
    created: np.ndarray  # datetime64[s] as int64 seconds
    block_start: np.ndarray  # per market
    block_end: np.ndarray
    ip_b: np.ndarray
    ip_c: np.ndarray
    second_device: np.ndarray


def _buyers(world: World) -> Buyers:
    rng = _rng(world.seed, "buyers")
    n = max(len(MARKETS) * 20, world.scale.orders // 3)
    share = np.array([MARKET_SIZE[m] for m in MARKETS])
    country = np.sort(rng.choice(len(MARKETS), size=n, p=share / share.sum()))
    start_s = int(world.start.value // 10**9)
    span = world.n_days * 86400
    new = rng.random(n) < 0.3
    created = np.where(new, start_s + rng.uniform(-30 * 86400, span, n), start_s - rng.uniform(30, 3000, n) * 86400)
    created = created.astype(np.int64)
    block_start = np.searchsorted(country, np.arange(len(MARKETS)), side="left")
    block_end = np.searchsorted(country, np.arange(len(MARKETS)), side="right")
    # The first buyer of each market exists since long before the period, so every order finds a buyer.
    created[block_start[block_start < block_end]] = start_s - 4000 * 86400
    order = np.lexsort((created, country))
    return Buyers(country=country[order], created=created[order], block_start=block_start, block_end=block_end,
                  ip_b=rng.integers(0, 256, n)[order], ip_c=rng.integers(0, 256, n)[order],
                  second_device=(rng.random(n) < 0.2)[order])


def _order_intensity(world: World) -> np.ndarray:
    """Relative order volume per [market, day]: market size, weekly pattern, promotions, growth."""
    size = np.array([MARKET_SIZE[m] for m in MARKETS])[:, None]
    region = pd.Categorical([MARKET_REGION[m] for m in MARKETS], categories=REGIONS).codes
    weekly = WEEKLY_TAB[world.dates.dayofweek.to_numpy()][:, region].T
    years = (world.dates.to_numpy("datetime64[D]").astype(np.int64) - 19723) / 365.25
    trend = np.exp(np.array([REGION_GROWTH[r] for r in REGIONS])[region][:, None] * years[None, :])
    return size * weekly * world.calendar.lift ** 0.8 * trend


def _ring_setup(world: World) -> tuple[np.ndarray, np.ndarray]:
    """Fraud-ring targets: series of a few merchants in the target categories, and the ring's devices."""
    sc = world.cfg.scenarios.fraud_ring
    rng = _rng(world.seed, "ring")
    cat = world.skus["category"].to_numpy(object)
    owner = world.skus["merchant_id"].to_numpy(object)
    cand = np.unique(owner[np.isin(cat, sc.categories)])
    if len(cand) == 0:
        cand = np.unique(owner)
    picked = rng.choice(cand, size=min(sc.merchants, len(cand)), replace=False)
    series = np.flatnonzero(np.isin(owner[world.s_sku], picked) & np.isin(cat[world.s_sku], sc.categories))
    if len(series) == 0:
        series = np.flatnonzero(np.isin(owner[world.s_sku], picked))
    devices = 900_000_000 + np.arange(sc.devices)
    return series, devices


def _orders_window(world: World, buyers: Buyers, window: int, d0: int, d1: int, n_normal: int,
                   intensity: np.ndarray, ring: tuple[np.ndarray, np.ndarray] | None) -> pd.DataFrame:
    """Orders of days [d0, d1): normal orders, fraud patterns, the fraud ring (scenario), then labels."""
    rk = world.cfg.risk
    rng = _rng(world.seed, "orders", window)
    start_s = int(world.start.value // 10**9)
    n_series = len(world.s_sku)
    launch_s = (world.skus["launch_date"].to_numpy("datetime64[s]").astype(np.int64))[world.s_sku]
    sku_price = world.s_price
    n_buyers = len(buyers.country)

    # --- normal orders: (market, day) by intensity, then a series of that market by its volume ---
    win = intensity[:, d0:d1]
    cell = rng.choice(win.size, size=n_normal, p=(win / win.sum()).ravel())
    o_market, o_day = cell // win.shape[1], d0 + cell % win.shape[1]
    series = np.empty(n_normal, dtype=np.int64)
    for m in range(len(MARKETS)):
        rows = np.flatnonzero(o_market == m)
        cand = np.flatnonzero(world.s_market == m)
        if len(rows) == 0:
            continue
        if len(cand) == 0:  # nobody sells here: reassign to any series
            cand = np.arange(n_series)
        w = world.s_base[cand] ** 0.8
        series[rows] = cand[rng.choice(len(cand), size=len(rows), p=w / w.sum())]
    o_market = world.s_market[series]
    hour = rng.choice(24, size=n_normal, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    t = start_s + o_day * 86400 + hour * 3600 + rng.integers(0, 3600, n_normal)
    u_buyer, u_dev, u_ip, u_ipc, u_card = (rng.random(n_normal) for _ in range(5))
    ip_d = rng.integers(1, 255, n_normal)
    other_ip = rng.integers(0, len(MARKETS), n_normal)
    other_card = rng.integers(0, len(MARKETS), n_normal)
    qty = 1 + rng.poisson(np.array([REGION_QTY[r] for r in REGIONS])[world.s_region[series]])
    amt_noise = rng.uniform(0.95, 1.08, n_normal)
    u_pay, u_bg = rng.random(n_normal), rng.random(n_normal)
    keep = t >= launch_s[series]  # no orders before the SKU launched
    # buyers whose account already existed at order time: a prefix of the market's block
    b_lo, b_hi = buyers.block_start[o_market], buyers.block_end[o_market]
    eligible = np.empty(n_normal, dtype=np.int64)
    for m in range(len(MARKETS)):
        rows = np.flatnonzero(o_market == m)
        if len(rows):
            lo, hi = buyers.block_start[m], buyers.block_end[m]
            eligible[rows] = np.searchsorted(buyers.created[lo:hi], t[rows], side="right")
    eligible = np.maximum(eligible, 1)
    buyer = np.minimum(b_lo + (u_buyer * eligible).astype(np.int64), b_hi - 1)
    device = buyer * 2 + (buyers.second_device[buyer] & (u_dev < 0.3))
    bc = buyers.country[buyer]
    ip_country = np.where(u_ipc < 0.05, other_ip, bc)  # travel, VPNs
    card_country = np.where(u_card < 0.06, other_card, bc)  # cross-border cards
    ip_b = np.where(u_ip < 0.7, buyers.ip_b[buyer], (buyers.ip_b[buyer] + 1) % 256)
    normal = dict(
        t=t, series=series, market=o_market, buyer=buyer, acct=buyers.created[buyer], device=device,
        ip_country=ip_country, card_country=card_country, ip_b=ip_b, ip_c=buyers.ip_c[buyer], ip_d=ip_d,
        qty=qty, amount=qty * sku_price[series] * amt_noise, pay_u=u_pay,
        fraud=u_bg < rk.background_fraud_share, kind=np.zeros(n_normal, np.int8),
    )
    # New sign-ups: a few legit orders come minutes to days after the account (and its device) was created.
    signup = rng.random(n_normal) < 0.04
    fresh = n_buyers + window * 10_000_000 + 500_000 + np.arange(n_normal)
    normal["buyer"] = np.where(signup, fresh, normal["buyer"])
    normal["device"] = np.where(signup, n_buyers * 2 + window * 10_000_000 + 500_000 + np.arange(n_normal), normal["device"])
    normal["acct"] = np.where(signup, t - rng.integers(120, 3 * 86400, n_normal), normal["acct"])
    normal = {k: v[keep] for k, v in normal.items()}
    n_kept = int(keep.sum())
    # Legit shopping sessions: some buyers place a second order from the same device minutes later, so
    # velocity alone does not separate fraud.
    u_follow = rng.random(n_kept)
    lead = np.flatnonzero(u_follow < 0.08)
    nf = len(lead)
    f_t = np.minimum(normal["t"][lead] + rng.integers(300, 3000, nf), start_s + d1 * 86400 - 1)
    f_series = np.empty(nf, dtype=np.int64)
    u_fs = rng.random(nf)
    same_market = np.argsort(world.s_market, kind="stable")
    m_first = np.searchsorted(world.s_market[same_market], np.arange(len(MARKETS)), side="left")
    m_count = np.bincount(world.s_market, minlength=len(MARKETS))
    f_market = normal["market"][lead]
    f_series = same_market[np.minimum(m_first[f_market] + (u_fs * m_count[f_market]).astype(np.int64),
                                      len(same_market) - 1)]
    f_ok = f_t >= launch_s[f_series]
    f_qty = 1 + rng.poisson(0.3, nf)
    follow = dict(
        t=f_t, series=f_series, market=f_market, buyer=normal["buyer"][lead], acct=normal["acct"][lead],
        device=normal["device"][lead], ip_country=normal["ip_country"][lead], card_country=normal["card_country"][lead],
        ip_b=normal["ip_b"][lead], ip_c=normal["ip_c"][lead], ip_d=normal["ip_d"][lead], qty=f_qty,
        amount=f_qty * sku_price[f_series] * rng.uniform(0.95, 1.08, nf), pay_u=normal["pay_u"][lead],
        fraud=np.zeros(nf, bool), kind=np.full(nf, 5, np.int8),
    )
    parts = [normal, {k: v[f_ok] for k, v in follow.items()}]
    next_buyer = n_buyers + window * 10_000_000  # fresh fraud accounts: their own id range per window
    next_device = n_buyers * 2 + window * 10_000_000
    w_start, w_end = start_s + d0 * 86400, start_s + d1 * 86400

    def any_series(size: int, tilt_value: bool) -> np.ndarray:
        w = world.s_base ** 0.5
        if tilt_value:
            cat = world.skus["category"].to_numpy(object)[world.s_sku]
            hv = world.skus["high_value"].to_numpy()[world.s_sku]
            w = w * sku_price ** 1.2 * np.where(np.isin(cat, ["electronics_3c", "smart_home"]) | hv, 4.0, 1.0)
        return rng.choice(n_series, size=size, p=w / w.sum())

    # --- stolen-card bursts: one device/IP, several orders within an hour, new accounts, mismatched countries ---
    n_burst = int(rng.poisson(n_kept * rk.fraud_burst_share / 5.0))
    sizes = 3 + rng.poisson(2.0, n_burst)
    b_id = np.repeat(np.arange(n_burst), sizes)
    nb = len(b_id)
    b_t0 = rng.integers(w_start, w_end - 3600, n_burst) if n_burst else np.zeros(0, np.int64)
    b_series = any_series(nb, True)
    bt = b_t0[b_id] + rng.integers(0, 3600, nb)
    b_market = world.s_market[b_series]
    b_ipc = np.where(rng.random(nb) < 0.45, rng.integers(0, len(MARKETS), n_burst)[b_id], b_market)
    b_card = np.where(rng.random(nb) < 0.55, rng.integers(0, len(MARKETS), nb), b_market)
    b_qty = 1 + rng.poisson(0.8, nb)
    parts.append(dict(
        t=bt, series=b_series, market=b_market, buyer=next_buyer + np.arange(nb),
        acct=np.where(rng.random(n_burst)[b_id] < 0.3, bt - rng.integers(200, 2000, n_burst)[b_id] * 86400,
                      bt - rng.integers(600, 3 * 86400, nb)),  # 30%: taken-over aged accounts
        device=next_device + b_id, ip_country=b_ipc,
        card_country=b_card, ip_b=rng.integers(0, 256, n_burst)[b_id], ip_c=rng.integers(0, 256, n_burst)[b_id],
        ip_d=rng.integers(1, 255, n_burst)[b_id], qty=b_qty, amount=b_qty * sku_price[b_series] * rng.uniform(1.0, 1.3, nb),
        pay_u=np.full(nb, -1.0), fraud=np.ones(nb, bool), kind=np.full(nb, 1, np.int8),
    ))
    next_buyer += nb
    next_device += n_burst

    # --- order brushing: a merchant's many tiny fake orders from fresh accounts on a shared device/IP block ---
    n_ep = int(rng.poisson(n_kept * rk.brushing_share / 20.0))
    quality = world.merchants["credit_quality"].to_numpy()
    owner_m = pd.Index(world.merchants["merchant_id"]).get_indexer(world.skus["merchant_id"])[world.s_sku]
    has_series = np.bincount(owner_m, minlength=len(quality)) > 0
    pm = np.where(has_series, (1.05 - quality) ** 3, 0.0)
    ep_merchant = rng.choice(len(quality), size=n_ep, p=pm / pm.sum())
    ep_sizes = 10 + rng.integers(0, 21, n_ep)
    e_id = np.repeat(np.arange(n_ep), ep_sizes)
    ne = len(e_id)
    ep_t0 = rng.integers(w_start, max(w_start + 1, w_end - 2 * 86400), n_ep) if n_ep else np.zeros(0, np.int64)
    et = ep_t0[e_id] + rng.integers(0, 2 * 86400, ne)
    # one of the merchant's series, uniformly
    order_m = np.argsort(owner_m, kind="stable")
    first = np.searchsorted(owner_m[order_m], np.arange(len(quality)), side="left")
    count = np.bincount(owner_m, minlength=len(quality))
    pick = first[ep_merchant[e_id]] + (rng.random(ne) * count[ep_merchant[e_id]]).astype(np.int64)
    e_series = order_m[np.minimum(pick, len(order_m) - 1)]
    e_market = world.s_market[e_series]
    parts.append(dict(
        t=et, series=e_series, market=e_market, buyer=next_buyer + np.arange(ne),
        acct=et - rng.integers(300, 86400, ne), device=next_device + e_id * 3 + rng.integers(0, 3, ne),
        ip_country=e_market, card_country=e_market, ip_b=rng.integers(0, 256, n_ep)[e_id],
        ip_c=rng.integers(0, 256, n_ep)[e_id], ip_d=rng.integers(1, 255, ne), qty=np.ones(ne, np.int64),
        amount=rng.uniform(1.0, 6.0, ne), pay_u=rng.random(ne) * 0.6, fraud=np.ones(ne, bool),
        kind=np.full(ne, 2, np.int8),
    ))
    next_buyer += ne
    next_device += 3 * n_ep

    # --- unusual amounts: far above what the merchant usually sells, from young accounts ---
    nu = int(rng.poisson(n_kept * rk.unusual_amount_share))
    u_series = any_series(nu, True)
    ut = rng.integers(w_start, w_end, nu)
    u_market = world.s_market[u_series]
    u_qty = rng.integers(8, 40, nu)
    parts.append(dict(
        t=ut, series=u_series, market=u_market, buyer=next_buyer + np.arange(nu),
        acct=ut - rng.integers(86400, 40 * 86400, nu), device=next_device + np.arange(nu),
        ip_country=u_market, card_country=np.where(rng.random(nu) < 0.4, rng.integers(0, len(MARKETS), nu), u_market),
        ip_b=rng.integers(0, 256, nu), ip_c=rng.integers(0, 256, nu), ip_d=rng.integers(1, 255, nu),
        qty=u_qty, amount=u_qty * sku_price[u_series] * rng.uniform(0.95, 1.1, nu), pay_u=np.full(nu, -1.0),
        fraud=np.ones(nu, bool), kind=np.full(nu, 3, np.int8),
    ))

    # --- fraud ring (scenario): aged accounts, matching countries, a few shared devices, chosen merchants ---
    if ring is not None and world.scenario_day is not None and d1 > world.scenario_day:
        sc = world.cfg.scenarios.fraud_ring
        r_series_pool, r_devices = ring
        rr = _rng(world.seed, "ring_orders", window)
        post_from = max(d0, world.scenario_day)
        n_post = int((normal["t"] >= start_s + post_from * 86400).sum())
        nr = int(round(n_post * sc.share_of_orders))
        r_series = r_series_pool[rr.integers(0, len(r_series_pool), nr)]
        r_day = rr.integers(post_from, d1, nr)
        r_hour = rr.choice(24, size=nr, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
        rt = start_s + r_day * 86400 + r_hour * 3600 + rr.integers(0, 3600, nr)
        r_market = world.s_market[r_series]
        # aged accounts: drawn from the oldest half of the market's buyers
        lo, hi = buyers.block_start[r_market], buyers.block_end[r_market]
        r_buyer = lo + (rr.random(nr) * np.maximum(1, (hi - lo) // 2)).astype(np.int64)
        r_qty = 1 + (rr.random(nr) < 0.3)
        parts.append(dict(
            t=rt, series=r_series, market=r_market, buyer=r_buyer, acct=buyers.created[r_buyer],
            device=r_devices[rr.integers(0, len(r_devices), nr)], ip_country=r_market, card_country=r_market,
            ip_b=rr.integers(0, 256, nr), ip_c=rr.integers(0, 256, nr), ip_d=rr.integers(1, 255, nr),
            qty=r_qty, amount=r_qty * sku_price[r_series] * rr.uniform(1.0, 1.4, nr), pay_u=np.full(nr, -1.0),
            fraud=np.ones(nr, bool), kind=np.full(nr, 4, np.int8),
        ))

    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(cols["t"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    return _finish_orders(world, cols, window)


def _finish_orders(world: World, c: dict[str, np.ndarray], window: int) -> pd.DataFrame:
    """Declarations, compliance and fraud labels, and the string columns of one window of orders."""
    rk = world.cfg.risk
    rng = _rng(world.seed, "orders", window, 1)
    n = len(c["t"])
    sku = world.s_sku[c["series"]]
    market = c["market"]
    region = world.s_region[c["series"]]
    m_idx = pd.Index(world.merchants["merchant_id"]).get_indexer(world.skus["merchant_id"].to_numpy(object)[sku])
    grade = world.merchants["credit_grade"].to_numpy(object)[m_idx]
    poor = np.isin(grade, ["D", "E"])
    category = world.skus["category"].to_numpy(object)[sku]
    desc = world.sku_desc[sku]
    dg_kw = has_control_keyword(desc) if n else np.zeros(0, bool)
    # One row of uniforms per order (row-major): orders added later in time never move earlier orders' draws.
    u_under, u_under_size, u_mis, u_mis_code, u_decl, u_comp, u_lag, u_lag2, u_clag = rng.random((n, 9)).T
    amount = np.round(np.maximum(0.5, c["amount"]), 2)
    undervalued = u_under < rk.undervalued_share * np.where(poor, 3.0, 0.7)
    declared = np.round(amount * np.where(undervalued, 0.1 + 0.3 * u_under_size, 0.85 + 0.15 * u_decl), 2)
    mis = u_mis < rk.hs_mismatch_share * np.where(poor, 3.0, 0.7)
    k = len(MISDECLARED_HS)
    hs = np.where(mis, MISDECLARED_HS[np.minimum((u_mis_code * k).astype(int), k - 1)],
                  world.skus["hs_code"].to_numpy(object)[sku])
    # A customs finding: misdeclaration and control-list goods get held; poor-grade merchants more often.
    p_comp = 1 - (1 - 0.003) * (1 - 0.4 * undervalued) * (1 - 0.45 * mis) * (1 - 0.06 * dg_kw) * (1 - 0.01 * poor)
    compliance = u_comp < p_comp
    t = c["t"].astype("datetime64[s]")
    fraud = c["fraud"]
    fraud_lag = (30 + 60 * (u_lag + u_lag2) / 2) * 86400  # chargebacks: 30-90 days, most around 60
    fraud_at = np.where(fraud, t + fraud_lag.astype("timedelta64[s]"), np.datetime64("NaT"))
    comp_at = np.where(compliance, t + ((2 + 8 * u_clag) * 86400).astype("timedelta64[s]"), np.datetime64("NaT"))
    # payment method by region; fraud uses cards (pay_u < 0) and brushing e-wallet/card
    pay = np.empty(n, dtype=object)
    for r, options in PAYMENTS.items():
        rows = region == REGIONS.index(r)
        shares = np.array([o[1] for o in options])
        pick = np.minimum((np.cumsum(shares)[None, :] < np.abs(c["pay_u"][rows])[:, None]).sum(axis=1), len(options) - 1)
        pay[rows] = np.array([o[0] for o in options], dtype=object)[pick]
    pay[c["pay_u"] < 0] = "card"
    ip_first = np.array([IP_FIRST_OCTET[m] for m in MARKETS])[c["ip_country"]]
    ip = (pd.Series(ip_first).astype(str) + "." + pd.Series(c["ip_b"]).astype(str) + "."
          + pd.Series(c["ip_c"]).astype(str) + "." + pd.Series(c["ip_d"]).astype(str)).to_numpy(object)
    return pd.DataFrame({
        "order_id": np.zeros(n, dtype=object),  # filled with positional ids by the caller
        "ordered_at": t.astype("datetime64[ns]"),
        "buyer_id": _ids("B", c["buyer"], 9),
        "account_created_at": np.minimum(c["acct"], c["t"]).astype("datetime64[s]").astype("datetime64[ns]"),
        "merchant_id": world.merchants["merchant_id"].to_numpy(object)[m_idx],
        "sku_id": world.skus["sku_id"].to_numpy(object)[sku],
        "category": category,
        "market": MARKETS_ARR[market],
        "quantity": c["qty"].astype(np.int64),
        "amount": amount,
        "payment_method": pay,
        "ip": ip,
        "device_id": _ids("D", c["device"], 10),
        "ip_country": MARKETS_ARR[c["ip_country"]],
        "card_country": MARKETS_ARR[c["card_country"]],
        "shipping_country": MARKETS_ARR[market],
        "declared_value": declared,
        "hs_code": hs,
        "item_description": desc,
        "is_fraud": fraud.astype(bool),
        "fraud_reported_at": fraud_at.astype("datetime64[ns]"),
        "is_compliance_issue": compliance,
        "compliance_reported_at": comp_at.astype("datetime64[ns]"),
    })


def iter_orders(world: World) -> Iterator[pd.DataFrame]:
    """Orders window by window (bounded memory), with positional order ids in time order."""
    buyers = _buyers(world)
    intensity = _order_intensity(world)
    ring = _ring_setup(world) if world.scenario == "fraud_ring" else None
    # Fixed window bounds and order counts: a scenario never moves orders between windows.
    step = world.cfg.order_window_days
    bounds = list(range(0, world.n_days, step)) + [world.n_days]
    total = intensity.sum()
    offset = 0
    for w in range(len(bounds) - 1):
        d0, d1 = bounds[w], bounds[w + 1]
        n_w = int(round(world.scale.orders * intensity[:, d0:d1].sum() / total))
        df = _orders_window(world, buyers, w, d0, d1, n_w, intensity, ring)
        df["order_id"] = _ids("O", offset + np.arange(len(df)), 10)
        offset += len(df)
        yield df


# -------------------------------------------------------------------------------------------- public API
def generate_tables(cfg: DataConfig, scale: str, seed: int, scenario: str | None = None, start: date | None = None,
                    days: int | None = None, progress: Progress | None = None) -> dict[str, pd.DataFrame]:
    """Generate the five canonical tables in memory (keys: merchants, skus, daily_sales, shipments, orders)."""
    report = progress or (lambda stage, frac: None)
    world = build_world(cfg, scale, seed, scenario, start, days)
    report("merchants and skus", 1.0)
    chunks = _sku_chunks(world)
    sales = []
    for i, idx in enumerate(chunks):
        sales.append(_demand_chunk(world, i, idx))
        report("daily_sales", (i + 1) / len(chunks))
    daily = pd.concat(sales, ignore_index=True) if len(sales) > 1 else sales[0]
    ships = _shipments(world)
    report("shipments", 1.0)
    n_windows = -(-world.n_days // cfg.order_window_days)
    orders = []
    for i, df in enumerate(iter_orders(world)):
        orders.append(df)
        report("orders", (i + 1) / n_windows)
    return {"merchants": world.merchants, "skus": world.skus, "daily_sales": daily, "shipments": ships,
            "orders": pd.concat(orders, ignore_index=True)}


def generate_shipments(cfg: DataConfig, scale: str, seed: int, scenario: str | None = None,
                       start: date | None = None, days: int | None = None) -> pd.DataFrame:
    """The shipments table alone, equal to generate_tables(...)["shipments"] (no sales or orders are drawn)."""
    return _shipments(build_world(cfg, scale, seed, scenario, start, days))


def _check(table: str, df: pd.DataFrame) -> None:
    """Validate a sample against the canonical schema: a generator bug must not reach the store."""
    from features.schema import validate_table
    from tradecast.errors import DataValidationError

    _, problems = validate_table(table, df.head(50_000))
    if problems:
        raise DataValidationError(table, problems)


def generate_to_store(cfg: DataConfig, scale: str, seed: int, scenario: str | None = None, start: date | None = None,
                      days: int | None = None, show_progress: bool = False) -> dict[str, pd.DataFrame | int]:
    """Generate and write the five tables to the offline store (each written atomically).

    Returns the tables as frames, except for streamed scales (`stream: true`, e.g. large), where daily_sales
    and orders are written chunk by chunk and returned as their row counts.
    """
    from features.offline import write_table

    scale_cfg = _scale(cfg, scale)
    with _progress_bar(show_progress) as report:
        if not scale_cfg.stream:
            tables = generate_tables(cfg, scale, seed, scenario, start, days, progress=report)
            world_meta = _period_meta(cfg, scale, seed, scenario, start, days)
            for name in TABLE_ORDER:
                _check(name, tables[name])
                write_table(name, tables[name], frequency="D", source="synthetic", **world_meta)
                report(f"write {name}", 1.0)
            return tables
        return _stream_to_store(cfg, scale, seed, scenario, start, days, report)


def _period_meta(cfg: DataConfig, scale: str, seed: int, scenario: str | None, start: date | None,
                 days: int | None) -> dict:
    first, n_days = _resolve_period(cfg, _scale(cfg, scale), start, days)
    scen = scenario_start(cfg, scenario, first.date(), n_days)
    return dict(scale=scale, seed=seed, scenario=scenario, scenario_start=None if scen is None else str(scen.date()),
                start=str(first.date()), days=n_days)


def _arrow_schema(table: str):
    import pyarrow as pa

    kinds = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
             "datetime": pa.timestamp("ns")}
    return pa.schema([(c.name, kinds[c.kind]) for c in TABLES[table].columns])


def _stream_to_store(cfg: DataConfig, scale: str, seed: int, scenario: str | None, start: date | None,
                     days: int | None, report: Progress) -> dict[str, pd.DataFrame | int]:
    """Write a large run: small tables at once, daily_sales and orders chunk by chunk via ParquetWriter."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from features.offline import META_KEY, write_table
    from tradecast.paths import ensure_dir, table_path

    world = build_world(cfg, scale, seed, scenario, start, days)
    meta = _period_meta(cfg, scale, seed, scenario, start, days)
    out: dict[str, pd.DataFrame | int] = {}
    for name, df in (("merchants", world.merchants), ("skus", world.skus)):
        _check(name, df)
        write_table(name, df, frequency="D", source="synthetic", **meta)
        out[name] = df
    report("merchants and skus", 1.0)

    def stream(name: str, frames: Iterator[pd.DataFrame], n_parts: int) -> int:
        path = table_path(name)
        ensure_dir(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        schema = _arrow_schema(name)
        rows = 0
        try:
            # store_schema=False: the footer key-value metadata (added at the end, when the row count is
            # known) is then what pq.read_schema / table_metadata see.
            with pq.ParquetWriter(tmp, schema, compression="zstd", store_schema=False) as writer:
                for i, df in enumerate(frames):
                    if i == 0:
                        _check(name, df)
                    writer.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False))
                    rows += len(df)
                    report(name, (i + 1) / n_parts)
                full = {"table": name, "frequency": "D", "source": "synthetic", "rows": rows, **meta}
                writer.add_key_value_metadata({META_KEY: json.dumps(full, default=str).encode()})
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return rows

    out["daily_sales"] = stream("daily_sales", iter_daily_sales(world), len(_sku_chunks(world)))
    ships = _shipments(world)
    _check("shipments", ships)
    write_table("shipments", ships, frequency="D", source="synthetic", **meta)
    out["shipments"] = ships
    report("shipments", 1.0)
    out["orders"] = stream("orders", iter_orders(world), -(-world.n_days // cfg.order_window_days))
    return out


class _progress_bar:
    """A rich progress bar (one task per stage) when shown; otherwise a no-op reporter."""

    def __init__(self, show: bool) -> None:
        self.show = show
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> Progress:
        if not self.show:
            return lambda stage, frac: None
        from rich.console import Console
        from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

        self.bar = RichProgress(TextColumn("{task.description:<20}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                TimeElapsedColumn(), console=Console(stderr=True), transient=False)
        self.bar.__enter__()

        def report(stage: str, frac: float) -> None:
            if stage not in self.tasks:
                self.tasks[stage] = self.bar.add_task(stage, total=1.0)
            self.bar.update(self.tasks[stage], completed=min(1.0, frac))

        return report

    def __exit__(self, *exc) -> None:
        if self.show:
            self.bar.__exit__(*exc)


# ---------------------------------------------------------------------------------------------- summary
def demand_facts(daily: pd.DataFrame) -> dict[str, float]:
    """Promotion-day and live-stream lifts against each series' ordinary days, and the stock-out share."""
    key = daily["sku_id"].astype(str) + "|" + daily["market"].astype(str)
    promo = daily["promotion_event"].notna().to_numpy()
    live = daily["live_sessions"].to_numpy() > 0
    so = daily["stock_out"].to_numpy(bool)
    ordinary = ~promo & ~live & ~so
    units = daily["units"].to_numpy(float)
    base = pd.Series(np.where(ordinary, units, np.nan)).groupby(key.to_numpy()).transform("mean").to_numpy()
    ok = base >= 1.0
    discounted = promo & (daily["discount"].to_numpy() > 0) & ~live & ~so & ok
    promo_lift = units[discounted].sum() / max(base[discounted].sum(), 1e-9) if discounted.any() else float("nan")
    live_rows = live & ~promo & ~so & ok
    live_lift = float(np.median(units[live_rows] / base[live_rows])) if live_rows.any() else float("nan")
    return {"promo_lift": float(promo_lift), "live_lift": live_lift, "stock_out_share": float(so.mean())}


def summary_lines(tables: dict[str, pd.DataFrame | int]) -> list[str]:
    """Rows per table, the period, and headline facts of each driver (frames only; counts for streamed tables)."""
    lines = []
    for name in TABLE_ORDER:
        t = tables.get(name)
        if t is None:
            continue
        n = t if isinstance(t, (int, np.integer)) else len(t)
        lines.append(f"{name:<12} {n:>12,} rows")
    daily = tables.get("daily_sales")
    if isinstance(daily, pd.DataFrame) and len(daily):
        f = demand_facts(daily)
        lines.append(f"period       {daily['date'].min().date()} .. {daily['date'].max().date()}, "
                     f"{daily.groupby(['sku_id', 'market']).ngroups:,} sku x market series")
        lines.append(f"demand       promotion days x{f['promo_lift']:.1f} vs ordinary days, live-stream days "
                     f"{(f['live_lift'] - 1) * 100:+.0f}% (median), stock-out days {f['stock_out_share']:.1%}")
    ships = tables.get("shipments")
    if isinstance(ships, pd.DataFrame) and len(ships):
        on_time = 1 - ships.groupby("mode")["late"].mean()
        by_mode = ", ".join(f"{m} {on_time[m]:.0%}" for m in MODE_ORDER if m in on_time)
        cross = ships["customs_channel"].notna()
        lines.append(f"transit      on-time {1 - ships['late'].mean():.1%} ({by_mode}); mean transit "
                     f"{ships['transit_days'].mean():.1f} d")
        lines.append(f"customs      mean clearance {ships.loc[cross, 'clearance_hours'].mean():.1f} h, inspection "
                     f"{(ships['customs_channel'] == 'inspection').sum() / max(cross.sum(), 1):.1%} of cross-border")
    orders = tables.get("orders")
    if isinstance(orders, pd.DataFrame) and len(orders):
        fraud = orders["is_fraud"].to_numpy(bool)
        lag = (orders.loc[fraud, "fraud_reported_at"] - orders.loc[fraud, "ordered_at"]).dt.total_seconds() / 86400
        lines.append(f"risk         fraud {fraud.mean():.2%} of orders (median label lag {lag.median():.0f} d), "
                     f"compliance issues {orders['is_compliance_issue'].mean():.2%}")
    return lines
