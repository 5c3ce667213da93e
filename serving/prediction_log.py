"""Durable prediction log: every served prediction as one JSON line, written off the request path.

Layout (monitoring reads it): `$TRADECAST_HOME/predictions/<family>/<YYYY-MM-DD>.jsonl`, by UTC logging
date, one object per predicted item (per forecast day for demand) with keys prediction_id, request_id,
logged_at, family, endpoint, model_name, model_version, event_time, entity, inputs, features, outputs,
defaults_used. prediction_id is `<request_id>:<item index>` (`<request_id>:<item index>:<horizon day>` for
demand, so each forecast day has its own id).

The request path only appends a `LoggedBatch` to an in-memory queue; a background thread serialises and
appends them every `flush_interval_s` seconds (one write() per file with O_APPEND, so several server
workers can share a file) and `close()` flushes what is left at shutdown.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import defaultdict, deque
from datetime import date, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from features.on_demand import n_rows
from serving.predict import LoggedBatch
from tradecast.errors import TradecastError
from tradecast.paths import ensure_dir, prediction_log_dir

logger = logging.getLogger("tradecast.serving.prediction_log")

ENTITY_COLUMNS: dict[str, tuple[str, ...]] = {
    "demand": ("sku_id", "market", "date"),
    "delay": ("shipment_id",),
    "risk": ("order_id",),
}
EVENT_TIME_COLUMN: dict[str, str] = {"demand": "date", "delay": "created_at", "risk": "ordered_at"}
RECORD_KEYS = ("prediction_id", "request_id", "logged_at", "family", "endpoint", "model_name", "model_version",
               "event_time", "entity", "inputs", "features", "outputs", "defaults_used")


def _frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe dicts of a frame's rows (NaN -> null, timestamps -> ISO strings)."""
    if frame.shape[1] == 0:
        return [{} for _ in range(len(frame))]
    return json.loads(frame.to_json(orient="records", date_format="iso", date_unit="s"))


def batch_records(batch: LoggedBatch) -> list[dict[str, Any]]:
    """The log records of one logged batch, in order."""
    return batches_records([batch])


def _columns_of(table: Any) -> tuple[str, ...]:
    return tuple(table.columns) if isinstance(table, pd.DataFrame) else tuple(table)


def _signature(batch: LoggedBatch) -> tuple:
    return (batch.family, type(batch.inputs) is dict, _columns_of(batch.inputs), _columns_of(batch.features),
            _columns_of(batch.outputs))


def batches_records(batches: list[LoggedBatch]) -> list[dict[str, Any]]:
    """The log records of several batches, in order. Consecutive batches of one family with the same columns
    are serialised together (one `to_json` per frame kind instead of three per request: at hundreds of
    requests per second the flush thread's CPU competes with the request path). Batches holding column ->
    array dicts (the risk request path) are joined column by column into one frame per kind."""
    records: list[dict[str, Any]] = []
    start = 0
    while start < len(batches):
        end = start + 1
        while end < len(batches) and _signature(batches[end]) == _signature(batches[start]):
            end += 1
        records += _group_records(batches[start:end])
        start = end
    return records


def _joined(tables: list[Any]) -> pd.DataFrame:
    """Tables with the same columns (frames, or column -> array dicts) as one frame."""
    if isinstance(tables[0], pd.DataFrame):
        return tables[0] if len(tables) == 1 else pd.concat(tables, ignore_index=True)
    return pd.DataFrame({c: np.concatenate([t[c] for t in tables]) for c in tables[0]})


def _group_records(group: list[LoggedBatch]) -> list[dict[str, Any]]:
    def joined(kind: str) -> pd.DataFrame:
        return _joined([getattr(b, kind) for b in group])

    inputs, features, outputs = (_frame_records(joined(k)) for k in ("inputs", "features", "outputs"))
    family = group[0].family
    entity_cols = ENTITY_COLUMNS[family]
    event_col = EVENT_TIME_COLUMN[family]
    records = []
    j = 0
    for batch in group:
        logged_at = batch.logged_at.astimezone(timezone.utc).isoformat()
        horizons = batch.inputs["horizon"].to_numpy() if family == "demand" else None
        for k in range(n_rows(batch.inputs)):
            row = inputs[j]
            item = int(batch.item_index[k])
            rid = batch.request_id if batch.row_request_ids is None else str(batch.row_request_ids[k])
            pid = f"{rid}:{item}" if horizons is None else f"{rid}:{item}:{int(horizons[k])}"
            records.append({
                "prediction_id": pid,
                "request_id": rid,
                "logged_at": logged_at,
                "family": family,
                "endpoint": batch.endpoint,
                "model_name": batch.model_name,
                "model_version": batch.model_version,
                "event_time": row.get(event_col),
                "entity": {c: row.get(c) for c in entity_cols},
                "inputs": row,
                "features": features[j],
                "outputs": outputs[j],
                "defaults_used": bool(batch.defaults_used[k]),
            })
            j += 1
    return records


def log_path(family: str, day: date, root: Path | None = None) -> Path:
    """File holding the records of `family` logged on UTC day `day`."""
    return (root or prediction_log_dir()) / family / f"{day.isoformat()}.jsonl"


def _append(path: Path, data: bytes, fsync: bool) -> None:
    ensure_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


class PredictionLogger:
    """Buffers logged batches in memory and appends them to the log on a timer and at close()."""

    def __init__(self, root: Path | None = None, flush_interval_s: float = 1.0, fsync: bool = True) -> None:
        self.root = root
        self.flush_interval_s = flush_interval_s
        self.fsync = fsync
        self.records_written = 0
        self._pending: deque[LoggedBatch] = deque()
        self._lock = threading.Lock()  # one flush at a time (timer thread vs close())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def append(self, batch: LoggedBatch | None) -> None:
        """Queue a batch (request path: constant time, no IO)."""
        if batch is not None:
            self._pending.append(batch)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> "PredictionLogger":
        """Start the background flusher (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="prediction-log-flush", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            try:
                self.flush()
            except Exception:  # keep flushing later; the records stay queued
                logger.exception("prediction log flush failed; will retry")

    def flush(self) -> int:
        """Write every queued batch now; returns the number of records written."""
        with self._lock:
            batches = []
            while self._pending:
                batches.append(self._pending.popleft())
            if not batches:
                return 0
            try:
                lines: dict[Path, list[str]] = defaultdict(list)
                by_path: dict[Path, list[LoggedBatch]] = defaultdict(list)
                for batch in batches:
                    by_path[log_path(batch.family, batch.logged_at.astimezone(timezone.utc).date(), self.root)].append(batch)
                for path, path_batches in by_path.items():
                    lines[path].extend(json.dumps(r, separators=(",", ":")) for r in batches_records(path_batches))
                for path, file_lines in lines.items():
                    _append(path, ("\n".join(file_lines) + "\n").encode("utf-8"), self.fsync)
            except Exception:
                self._pending.extendleft(reversed(batches))
                raise
            count = sum(len(v) for v in lines.values())
            self.records_written += count
            return count

    def close(self) -> None:
        """Stop the flusher and write everything still queued."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.flush_interval_s))
        self.flush()


def _as_utc(value: Any) -> pd.Timestamp | None:
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _files(family: str, since: pd.Timestamp | None, until: pd.Timestamp | None, root: Path) -> Iterable[Path]:
    for path in sorted((root / family).glob("*.jsonl")):
        try:
            day = date.fromisoformat(path.stem)
        except ValueError:
            continue
        if since is not None and day < since.date():
            continue
        if until is not None and day > until.date():
            continue
        yield path


def read_prediction_log(family: str, since: Any = None, until: Any = None, root: Path | None = None) -> pd.DataFrame:
    """Logged predictions of `family` with since <= logged_at < until (anything pd.Timestamp accepts; naive = UTC).

    Columns: the top-level keys (logged_at and event_time as timestamps, logged_at in UTC), the entity keys
    as plain columns, and inputs / features / outputs flattened to `in_<name>`, `f_<name>`, `out_<name>`.
    """
    if family not in ENTITY_COLUMNS:
        raise TradecastError(f"unknown family '{family}': choose one of {', '.join(ENTITY_COLUMNS)}")
    root = root or prediction_log_dir()
    start, end = _as_utc(since), _as_utc(until)
    records: list[dict[str, Any]] = []
    for path in _files(family, start, end, root):
        with path.open("r", encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    records.append(json.loads(line))
    top = ["prediction_id", "request_id", "logged_at", "family", "endpoint", "model_name", "model_version",
           "event_time", "defaults_used"]
    if not records:
        return pd.DataFrame(columns=top + list(ENTITY_COLUMNS[family]))
    frame = pd.DataFrame({k: [r.get(k) for r in records] for k in top})
    frame["logged_at"] = pd.to_datetime(frame["logged_at"], utc=True, format="ISO8601")
    frame["event_time"] = pd.to_datetime(frame["event_time"], format="ISO8601")
    parts = [frame, pd.DataFrame([r["entity"] for r in records])]
    for key, prefix in (("inputs", "in_"), ("features", "f_"), ("outputs", "out_")):
        parts.append(pd.DataFrame([r.get(key) or {} for r in records]).add_prefix(prefix))
    out = pd.concat(parts, axis=1)
    if "date" in out.columns:
        out["date"] = pd.to_datetime(out["date"], format="ISO8601")
    mask = np.ones(len(out), dtype=bool)
    if start is not None:
        mask &= (out["logged_at"] >= start).to_numpy()
    if end is not None:
        mask &= (out["logged_at"] < end).to_numpy()
    return out.loc[mask].reset_index(drop=True)
