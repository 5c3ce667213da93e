"""Promotion and holiday calendars of cross-border commerce, per market, as plain arrays.

Sellers know these dates in advance (they are planned covariates): 618, Double 11, Black Friday / Cyber
Monday, Christmas, the SEA mega sales (9.9, 10.10, 12.12), Ramadan (Middle East, Malaysia, Indonesia) and
Tet (Vietnam). Lunar / Hijri dates come from a table of real dates per year.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.schema import MARKET_REGION, MARKETS

SEA = tuple(m for m, r in MARKET_REGION.items() if r == "sea")
EUROPE = tuple(m for m, r in MARKET_REGION.items() if r == "europe")
NORTH_AMERICA = tuple(m for m, r in MARKET_REGION.items() if r == "north_america")
LATAM = tuple(m for m, r in MARKET_REGION.items() if r == "latam")
RAMADAN_MARKETS = ("SA", "AE", "MY", "ID")

# First and last day of Ramadan (approximate civil dates; they vary by a day with moon sighting).
RAMADAN: dict[int, tuple[str, str]] = {
    2022: ("2022-04-02", "2022-05-01"),
    2023: ("2023-03-23", "2023-04-20"),
    2024: ("2024-03-11", "2024-04-09"),
    2025: ("2025-03-01", "2025-03-30"),
    2026: ("2026-02-18", "2026-03-19"),
    2027: ("2027-02-08", "2027-03-09"),
    2028: ("2028-01-28", "2028-02-25"),
}
# Tet (Lunar New Year) day; also Chinese New Year, when Chinese factories and hubs slow down.
TET: dict[int, str] = {
    2022: "2022-02-01", 2023: "2023-01-22", 2024: "2024-02-10", 2025: "2025-01-29",
    2026: "2026-02-17", 2027: "2027-02-06", 2028: "2028-01-26",
}
# Events that carry seller discounts (promotion days get 10-40% off); holidays like tet_holiday do not.
NO_DISCOUNT_EVENTS = ("tet_holiday",)


@dataclass(frozen=True)
class EventInstance:
    """One occurrence of a named promotion: its days, the lift multiplier per day and its markets."""

    name: str
    markets: tuple[str, ...]
    days: tuple[pd.Timestamp, ...]
    lifts: tuple[float, ...]


def _ramp(peak_day: pd.Timestamp, before: list[float], peak: float, after: list[float]) -> tuple[list, list]:
    days = [peak_day + pd.Timedelta(days=i - len(before)) for i in range(len(before))]
    days += [peak_day] + [peak_day + pd.Timedelta(days=i + 1) for i in range(len(after))]
    return days, before + [peak] + after


def black_friday(year: int) -> pd.Timestamp:
    """The day after the fourth Thursday of November."""
    nov1 = pd.Timestamp(year=year, month=11, day=1)
    first_thu = nov1 + pd.Timedelta(days=(3 - nov1.dayofweek) % 7)
    return first_thu + pd.Timedelta(days=22)


def event_instances(years: range | list[int]) -> list[EventInstance]:
    """All promotion/holiday occurrences in `years`, with per-day lifts (before seller discounts)."""
    out: list[EventInstance] = []
    for y in years:
        ts = lambda m, d: pd.Timestamp(year=y, month=m, day=d)  # noqa: E731
        d, lift = _ramp(ts(6, 18), [1.2, 1.4, 1.7], 3.0, [1.3])
        out.append(EventInstance("618", SEA, tuple(d), tuple(lift)))
        # Double 11 is strongest on the Asian marketplaces; elsewhere a smaller sale.
        d, lift = _ramp(ts(11, 11), [1.2, 1.4, 1.8], 4.0, [1.4])
        out.append(EventInstance("double_11", SEA, tuple(d), tuple(lift)))
        d, lift = _ramp(ts(11, 11), [1.1, 1.3], 2.2, [1.2])
        out.append(EventInstance("double_11", EUROPE + NORTH_AMERICA + LATAM + ("SA", "AE"), tuple(d), tuple(lift)))
        bf = black_friday(y)
        d, lift = _ramp(bf, [1.2, 1.3, 1.4, 1.6, 2.0], 3.5, [2.2, 1.8])
        out.append(EventInstance("black_friday", EUROPE + NORTH_AMERICA + LATAM, tuple(d), tuple(lift)))
        out.append(EventInstance("cyber_monday", EUROPE + NORTH_AMERICA + LATAM, (bf + pd.Timedelta(days=3),), (3.0,)))
        xmas_days = [ts(12, day) for day in range(8, 23)]
        xmas_lift = list(np.round(np.linspace(1.4, 2.4, len(xmas_days)), 3))
        out.append(EventInstance("christmas", EUROPE + NORTH_AMERICA, tuple(xmas_days), tuple(xmas_lift)))
        for name, month in (("sale_9_9", 9), ("sale_10_10", 10), ("sale_12_12", 12)):
            d, lift = _ramp(ts(month, month), [1.4], 3.2, [1.2])
            out.append(EventInstance(name, SEA, tuple(d), tuple(lift)))
        if y in RAMADAN:
            first, last = (pd.Timestamp(x) for x in RAMADAN[y])
            days = list(pd.date_range(first, last, freq="D"))
            # Shopping builds towards Eid: the last ten days are the strongest.
            lifts = [1.6 if i < len(days) - 10 else 2.6 for i in range(len(days))]
            out.append(EventInstance("ramadan", RAMADAN_MARKETS, tuple(days), tuple(lifts)))
        if y in TET:
            tet = pd.Timestamp(TET[y])
            before = list(np.round(np.linspace(1.5, 3.0, 18), 3))
            d, lift = _ramp(tet - pd.Timedelta(days=1), before[:-1], before[-1], [])
            out.append(EventInstance("tet", ("VN",), tuple(d), tuple(lift)))
            hol = [tet + pd.Timedelta(days=i) for i in range(5)]
            out.append(EventInstance("tet_holiday", ("VN",), tuple(hol), (0.4,) * 5))
    return out


@dataclass(frozen=True)
class MarketCalendar:
    """Per (market, day) promotion arrays for a date range.

    instance[m, t] indexes `names`/`instance_names` (-1: no event); lift[m, t] is the demand multiplier
    before seller discounts; discounted[m, t] says whether sellers discount on that day.
    """

    dates: pd.DatetimeIndex
    markets: tuple[str, ...]
    instance: np.ndarray
    lift: np.ndarray
    discounted: np.ndarray
    instance_names: tuple[str, ...]

    def event_name(self) -> np.ndarray:
        """Object array [market, day] of event names (None where no event)."""
        names = np.array(list(self.instance_names) + [None], dtype=object)
        return names[np.where(self.instance >= 0, self.instance, len(self.instance_names))]


def market_calendar(dates: pd.DatetimeIndex, markets: tuple[str, ...] = MARKETS) -> MarketCalendar:
    """Promotion calendar for `dates` x `markets`. Where two events overlap, the larger lift wins."""
    years = range(dates.min().year - 1, dates.max().year + 2)
    instances = event_instances(years)
    n_m, n_d = len(markets), len(dates)
    instance = np.full((n_m, n_d), -1, dtype=np.int32)
    lift = np.ones((n_m, n_d))
    day_index = pd.Series(np.arange(n_d), index=dates)
    m_index = {m: i for i, m in enumerate(markets)}
    names: list[str] = []
    for inst in instances:
        pos = day_index.reindex(pd.DatetimeIndex(inst.days)).to_numpy()
        keep = ~np.isnan(pos)
        if not keep.any():
            continue
        idx = len(names)
        names.append(inst.name)
        cols = pos[keep].astype(int)
        lifts = np.asarray(inst.lifts)[keep]
        for m in inst.markets:
            if m not in m_index:
                continue
            row = m_index[m]
            better = (instance[row, cols] < 0) | (lifts > lift[row, cols])
            instance[row, cols[better]] = idx
            lift[row, cols[better]] = lifts[better]
    discounted = instance >= 0
    for i, n in enumerate(names):
        if n in NO_DISCOUNT_EVENTS:
            discounted &= instance != i
    return MarketCalendar(dates, tuple(markets), instance, lift, discounted, tuple(names))


def congestion_index(dates: pd.DatetimeIndex) -> np.ndarray:
    """Logistics congestion 0..1 per day: Nov-Dec peak season, the run-up to 618, Lunar New Year closures."""
    doy = dates.dayofyear.to_numpy()
    month = dates.month.to_numpy()
    day = dates.day.to_numpy()
    out = np.zeros(len(dates))
    peak = (month == 11) | ((month == 12) & (day <= 24))
    # Ramps up through November, highest in the first three weeks of December.
    out = np.where(peak, np.clip((doy - 305) / 40.0, 0.3, 1.0), out)
    out = np.where((month == 6) & (day <= 18), 0.5, out)
    for tet in TET.values():
        t = pd.Timestamp(tet)
        near = (dates >= t - pd.Timedelta(days=7)) & (dates <= t + pd.Timedelta(days=10))
        out = np.where(np.asarray(near), np.maximum(out, 0.6), out)
    return out
