"""Read the prediction log serving writes: `$TRADECAST_HOME/predictions/<family>/<YYYY-MM-DD>.jsonl`.

One JSON object per predicted item: prediction_id, request_id, logged_at, family, endpoint, model_name,
model_version, event_time, entity (join keys), inputs, features, outputs, defaults_used. The reader flattens
it into one row per prediction: top-level fields as they are, entity keys as plain columns (sku_id, market,
date / shipment_id / order_id), and `in_<field>`, `f_<feature>`, `out_<output>` columns. A torn last line
(a crash mid-write) is skipped and counted rather than failing the whole read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from tradecast.errors import TradecastError
from tradecast.paths import prediction_log_dir

# Join keys of each family's predictions with its outcomes.
ENTITY_KEYS: dict[str, tuple[str, ...]] = {
    "demand": ("sku_id", "market", "date"),
    "delay": ("shipment_id",),
    "risk": ("order_id",),
}
TIME_COLUMNS = ("logged_at", "event_time")


@dataclass(frozen=True)
class PredictionLog:
    """The rows read and how many lines could not be parsed."""

    frame: pd.DataFrame
    files: tuple[Path, ...]
    bad_lines: int


def family_log_dir(family: str) -> Path:
    return prediction_log_dir() / family


def log_files(family: str, since: datetime | None = None, until: datetime | None = None,
              slack_days: int = 1) -> list[Path]:
    """Daily files of a family whose date is within [since - slack, until + slack] (all files when open)."""
    folder = family_log_dir(family)
    if not folder.exists():
        return []
    files = []
    for path in sorted(folder.glob("*.jsonl")):
        try:
            day = datetime.strptime(path.stem, "%Y-%m-%d")
        except ValueError:
            continue
        if since is not None and day < (since - timedelta(days=slack_days)).replace(hour=0, minute=0, second=0,
                                                                                    microsecond=0):
            continue
        if until is not None and day > until + timedelta(days=slack_days):
            continue
        files.append(path)
    return files


def parse_records(lines: list[str]) -> tuple[list[dict], int]:
    """Parse JSON lines; returns the records and the number of unparseable lines."""
    records, bad = [], 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(obj, dict):
            records.append(obj)
        else:
            bad += 1
    return records, bad


def flatten_records(records: list[dict]) -> pd.DataFrame:
    """One row per prediction with entity keys as columns and in_/f_/out_ prefixed inputs/features/outputs."""
    if not records:
        return pd.DataFrame(columns=["prediction_id", "logged_at", "event_time"])
    nested = {"entity": "", "inputs": "in_", "features": "f_", "outputs": "out_"}
    top = pd.DataFrame.from_records([{k: v for k, v in r.items() if k not in nested} for r in records])
    parts = [top]
    for key, prefix in nested.items():
        part = pd.DataFrame.from_records([r.get(key) or {} for r in records])
        if len(part.columns):
            parts.append(part.add_prefix(prefix))
    frame = pd.concat(parts, axis=1)
    frame = frame.loc[:, ~frame.columns.duplicated()]
    for col in TIME_COLUMNS:
        if col in frame.columns:
            frame[col] = to_utc_naive(frame[col])
    if "date" in frame.columns:
        frame["date"] = pd.to_datetime(frame["date"], errors="coerce").dt.strftime("%Y-%m-%d")
    return frame


def to_utc_naive(values: pd.Series) -> pd.Series:
    """ISO strings (with or without offset) -> naive UTC timestamps."""
    out = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    return out.dt.tz_localize(None)


def read_prediction_log(family: str, since: datetime | None = None, until: datetime | None = None,
                        time_column: str = "logged_at") -> PredictionLog:
    """Predictions of `family` with `since <= time_column < until` (naive UTC datetimes, None = open)."""
    if time_column not in TIME_COLUMNS:
        raise TradecastError(f"time column '{time_column}': choose one of {', '.join(TIME_COLUMNS)}")
    # files are named by the day they were logged; event times can be anywhere, so read them all then
    files = log_files(family, since, until) if time_column == "logged_at" else log_files(family)
    records, bad = [], 0
    for path in files:
        recs, n_bad = parse_records(path.read_text(encoding="utf-8", errors="replace").splitlines())
        records.extend(recs)
        bad += n_bad
    frame = flatten_records(records)
    if len(frame) and time_column in frame.columns:
        keep = frame[time_column].notna()
        if since is not None:
            keep &= frame[time_column] >= pd.Timestamp(since)
        if until is not None:
            keep &= frame[time_column] < pd.Timestamp(until)
        frame = frame.loc[keep].reset_index(drop=True)
    return PredictionLog(frame=frame, files=tuple(files), bad_lines=bad)


def write_prediction_records(family: str, records: list[dict]) -> list[Path]:
    """Append records to the daily files named by their `logged_at` day (for tests, demos and replays)."""
    from tradecast.paths import ensure_dir

    folder = ensure_dir(family_log_dir(family))
    by_day: dict[str, list[dict]] = {}
    for rec in records:
        day = str(rec["logged_at"])[:10]
        by_day.setdefault(day, []).append(rec)
    paths = []
    for day, recs in sorted(by_day.items()):
        path = folder / f"{day}.jsonl"
        with path.open("a", encoding="utf-8") as fh:
            for rec in recs:
                fh.write(json.dumps(rec, default=str) + "\n")
        paths.append(path)
    return paths
