"""Seeded synthetic prediction-log records and references for the monitoring tests (format of serving's log)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

LANES = ["CN-SZX>DE", "CN-SZX>MY", "CN-NGB>US", "CN-SZX>GB", "MY-KUL>MY"]
MODES = ["air", "sea", "express", "rail"]


def delay_frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Delay features/outputs; `shift` > 0 moves sea transit and lane delays up (a Red Sea-like event)."""
    rng = np.random.default_rng(seed)
    mode = rng.choice(MODES, n, p=[0.4, 0.3, 0.2, 0.1] if not shift else [0.2, 0.5, 0.2, 0.1])
    lane = rng.choice(LANES, n)
    weight = rng.lognormal(1.0, 0.6, n)
    promised = np.where(mode == "sea", 35.0, np.where(mode == "air", 9.0, 7.0))
    lane_delay = rng.gamma(2.0, 1.0, n) + shift * 8.0
    base = promised * rng.uniform(0.8, 1.1, n) + lane_delay * 0.5
    transit = base + shift * 10.0 * (mode == "sea") + rng.normal(0, 1.0, n)
    p50 = base + rng.normal(0, 0.3, n)
    return pd.DataFrame({
        "shipment_id": [f"S{seed}-{i:05d}" for i in range(n)],
        "mode": mode, "lane": lane, "weight_kg": weight, "promised_days": promised,
        "lane_delay_7d": lane_delay, "customs_channel": rng.choice(["fast_lane", "standard", "inspection"], n,
                                                                   p=[0.3, 0.6, 0.1] if not shift else [0.1, 0.5, 0.4]),
        "transit_days_p50": p50, "transit_days_p90": p50 * 1.2, "p_late": 1 / (1 + np.exp(-(lane_delay - 2))),
        "actual_transit_days": np.maximum(transit, 0.5),
    })


def delay_records(frame: pd.DataFrame, start: datetime, hours: float, model_version: str = "1") -> list[dict]:
    """Prediction-log records of a delay frame, spread evenly over `hours` from `start`."""
    records = []
    step = hours / max(len(frame), 1)
    for i, row in enumerate(frame.itertuples(index=False)):
        at = start + timedelta(hours=i * step)
        records.append({
            "prediction_id": f"p-{row.shipment_id}", "request_id": f"r-{i // 10}",
            "logged_at": at.isoformat() + "Z", "family": "delay", "endpoint": "predict_delay",
            "model_name": "tradecast-delay", "model_version": model_version, "event_time": at.isoformat(),
            "entity": {"shipment_id": row.shipment_id},
            "inputs": {"shipment_id": row.shipment_id, "lane": row.lane, "mode": row.mode,
                       "weight_kg": float(row.weight_kg), "promised_days": float(row.promised_days),
                       "created_at": at.isoformat()},
            "features": {"weight_kg": float(row.weight_kg), "mode": row.mode, "lane": row.lane,
                         "promised_days": float(row.promised_days), "lane_delay_7d": float(row.lane_delay_7d),
                         "customs_channel": row.customs_channel},
            "outputs": {"transit_days_p50": float(row.transit_days_p50), "transit_days_p90": float(row.transit_days_p90),
                        "p_late": float(row.p_late), "expected_delay_hours": max(0.0, float(row.transit_days_p50
                                                                                            - row.promised_days) * 24),
                        "alert": bool(row.p_late > 0.8)},
            "defaults_used": [],
        })
    return records


def delay_reference(frame: pd.DataFrame) -> pd.DataFrame:
    """A reference file like the champion's training sample: bare feature names plus predictions."""
    cols = ["weight_kg", "mode", "lane", "promised_days", "lane_delay_7d", "customs_channel",
            "transit_days_p50", "transit_days_p90", "p_late"]
    return frame[cols].copy()
