"""Durable prediction log: every served prediction as one JSON line, written off the request path.

Layout (monitoring reads it): `$TRADECAST_HOME/predictions/<family>/<YYYY-MM-DD>.jsonl`, by UTC logging
date, one object per predicted item (per forecast day for demand) with keys prediction_id, request_id,
logged_at, family, endpoint, model_name, model_version, event_time, entity, inputs, features, outputs,
defaults_used. prediction_id is `<request_id>:<item index>` (`<request_id>:<item index>:<horizon day>` for
demand, so each forecast day has its own id).

The request path only appends a `LoggedBatch` to an in-memory queue; a background thread turns them into
JSON lines and appends them every `flush_interval_s` seconds (one write() per file with O_APPEND, so several
server workers can share a file) and `close()` flushes what is left at shutdown. The thread encodes a few
records at a time with a short sleep between slices: encoding a second's records in one go held the GIL
for 10-40 ms, and requests arriving meanwhile waited for it (p99 at one connection 30-35 ms, 8-15 ms
with slices; experiments/bench_serving.py).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import defaultdict, deque
from datetime import date, timezone
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterable, Iterator

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
# encoding slice (~1 ms of CPU) and the pause after it, while the encoding stays within half an interval
ENCODE_SLICE_RECORDS = 32
ENCODE_PAUSE_S = 0.005
RECORD_KEYS = ("prediction_id", "request_id", "logged_at", "family", "endpoint", "model_name", "model_version",
               "event_time", "entity", "inputs", "features", "outputs", "defaults_used")


# pandas' own JSON encoder, as DataFrame.to_json(orient="records", date_format="iso", date_unit="s") calls it:
# floats rounded to 10 decimals its way, NaN/inf -> null, datetime64 and Timestamps -> ISO seconds. The log
# has always held those values, so the writer keeps the encoder and drops only the frames around it.
from pandas._libs.json import ujson_dumps as _pandas_json

_PANDAS_JSON_ARGS = {"orient": "values", "double_precision": 10, "iso_dates": True, "date_unit": "s",
                     "ensure_ascii": True}
# json.dumps(..., separators=...) builds an encoder per call; one line per record makes that add up
_encode_line = json.JSONEncoder(separators=(",", ":")).encode


def _frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe dicts of a frame's rows (NaN -> null, timestamps -> ISO strings): the whole-frame path, for
    columns the column path does not take (extension dtypes, non-string names)."""
    if frame.shape[1] == 0:
        return [{} for _ in range(len(frame))]
    return json.loads(frame.to_json(orient="records", date_format="iso", date_unit="s"))


def _values_json(values: np.ndarray) -> list[Any]:
    """One numpy column's values exactly as `_frame_records` gives them, without a frame."""
    return json.loads(_pandas_json(values, **_PANDAS_JSON_ARGS))


def batch_records(batch: LoggedBatch) -> list[dict[str, Any]]:
    """The log records of one logged batch, in order."""
    return batches_records([batch])


def _columns_of(table: Any) -> tuple[str, ...]:
    return tuple(table.columns) if isinstance(table, pd.DataFrame) else tuple(table)


def _signature(batch: LoggedBatch) -> tuple:
    return (batch.family, type(batch.inputs) is dict, _columns_of(batch.inputs), _columns_of(batch.features),
            _columns_of(batch.outputs))


def _runs(batches: list[LoggedBatch]) -> Iterator[list[LoggedBatch]]:
    """Consecutive batches of one family with the same columns, serialised together (one encoder call per
    column and run instead of three frames per request: at hundreds of requests per second the flush
    thread's CPU competes with the request path)."""
    signatures = [_signature(b) for b in batches]
    start = 0
    while start < len(batches):
        end = start + 1
        while end < len(batches) and signatures[end] == signatures[start]:
            end += 1
        yield batches[start:end]
        start = end


def batches_records(batches: list[LoggedBatch]) -> list[dict[str, Any]]:
    """The log records of several batches, in order: what `record_lines` writes, read back as dicts."""
    return [json.loads(line) for line in record_lines(batches)]


def record_lines(batches: list[LoggedBatch]) -> list[str]:
    """The log lines of several batches, in order: each is `json.dumps(record, separators=(",", ":"))` of
    its `batches_records` record, assembled from per-column JSON fragments instead of dicts (encoding each
    record's ~80 values one dict at a time was most of the flush thread's CPU)."""
    return [line for group in _runs(batches) for line in _group_lines(group)]


def _joined_column(tables: list[Any], name: str) -> np.ndarray | None:
    """Column `name` of same-columned tables as one numpy array, typed as the column of their pd.concat
    (None when that is a pandas extension dtype: those take the whole-frame path)."""
    if not isinstance(tables[0], pd.DataFrame):
        parts = list(map(itemgetter(name), tables))  # one C call per column: single orders make long runs
        return np.asarray(parts[0]) if len(parts) == 1 else np.concatenate(parts)
    series = [t[name] for t in tables]
    if any(not isinstance(s.dtype, np.dtype) for s in series):
        return None
    if len(series) == 1:
        return series[0].to_numpy()
    if all(s.dtype == series[0].dtype for s in series):
        return np.concatenate([s.to_numpy() for s in series])
    joined = pd.concat(series, ignore_index=True)  # mixed dtypes: pandas' upcasting rules, as pd.concat of frames
    return joined.to_numpy() if isinstance(joined.dtype, np.dtype) else None


def _table_arrays(tables: list[Any]) -> tuple[tuple[str, ...], list[np.ndarray]] | None:
    """(names, one numpy array per column) of same-columned tables (frames, or column -> array dicts); None
    when some column needs the whole-frame path."""
    names = _columns_of(tables[0])
    if not names or not all(isinstance(c, str) for c in names):
        return None
    columns = [_joined_column(tables, c) for c in names]
    # dtypes checked against the whole-frame path (tests); others (datetime64[s], timedelta, ...) take it
    if any(c is None or (c.dtype not in _TEXT_DTYPES and c.dtype.kind not in "OU") for c in columns):
        return None
    return names, columns


def _joined(tables: list[Any]) -> pd.DataFrame:
    """Tables with the same columns (frames, or column -> array dicts) as one frame."""
    if isinstance(tables[0], pd.DataFrame):
        return tables[0] if len(tables) == 1 else pd.concat(tables, ignore_index=True)
    return pd.DataFrame({c: np.concatenate([t[c] for t in tables]) for c in tables[0]})


_encode_str = json.encoder.encode_basestring_ascii  # what the encoder writes for a str (ensure_ascii)
_SCALAR_TYPES = frozenset({float, int, bool, type(None)})
_NONE = type(None)
# Tokens of pandas' float text that repr(float(token)) writes otherwise: exponents, |x| < 1e-4 (repr switches
# to e-notation) and more than 15 significant digits (repr's shortest round-trip digits may differ). Any
# other token (at most 15 significant digits, no exponent, 1e-4 <= |x| < 1e16 or 0) is exactly its repr.
_REPR_DIFFERS = re.compile(r"-?(?:0\.0000\d*|[1-9][\d.]{16,})|.*[eE].*")
_TEXT_DTYPES = frozenset({np.dtype(t) for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                                                 "uint32", "uint64", "float32", "float64", "datetime64[ns]")})


def _float_tokens(text: str) -> list[str]:
    """pandas' JSON of a float column (without brackets) as the tokens json.dumps(json.loads(...)) writes."""
    tokens = text.split(",")
    # the common case, checked at C speed: no exponent, nothing below 1e-4, at most 15 digits and a '.'
    if "e" not in text and "0.0000" not in text and max(map(len, tokens)) <= 16:
        return tokens
    return [repr(float(t)) if _REPR_DIFFERS.fullmatch(t) else t for t in tokens]


def _fragments(values: list[Any]) -> list[str]:
    """Each value as `_encode_line` writes it, with as few calls per value as the types allow."""
    kinds = set(map(type, values))
    if kinds <= _SCALAR_TYPES:  # numbers, true/false/null never hold ", ": split one dumps of the column
        return json.dumps(values)[1:-1].split(", ") if values else []
    if kinds == {str}:
        return list(map(_encode_str, values))
    return list(map(_encode_line, values))


def _column_fragments(values: np.ndarray) -> list[str]:
    """Each value of a numpy column as the old writer's line held it (json.dumps of json.loads of pandas'
    JSON), decoding and re-encoding only what would come out different: numbers, bools, nulls and ISO
    timestamps are pandas' text as it is, except the rare float tokens `_REPR_DIFFERS` names."""
    if values.dtype in _TEXT_DTYPES:
        text = _pandas_json(values, **_PANDAS_JSON_ARGS)[1:-1]
        if not text:
            return []
        return _float_tokens(text) if values.dtype.kind == "f" else text.split(",")
    if values.dtype.kind in "OU":
        plain = values.tolist()
        kinds = set(map(type, plain))
        if kinds == {str}:
            return list(map(_encode_str, plain))
        if kinds == {str, _NONE}:
            return [_encode_str(v) if v is not None else "null" for v in plain]
    return _fragments(_values_json(values))


def _table_json(tables: list[Any], wanted: tuple[str, ...]) -> tuple[list[str], dict[str, list[str]]]:
    """(per row: the inside of its JSON object, per column in `wanted`: its values' JSON) of same-columned
    tables; a wanted column the tables lack is null."""
    table = _table_arrays(tables)
    if table is None:
        rows = _frame_records(_joined(tables))
        return ([_encode_line(r)[1:-1] for r in rows],
                {c: [_encode_line(r.get(c)) for r in rows] for c in wanted})
    names, columns = table
    frags = [_column_fragments(c) for c in columns]
    keyed = [list(map(f"{_encode_str(name)}:".__add__, f)) for name, f in zip(names, frags)]
    rows = list(map(",".join, zip(*keyed)))
    by_name = dict(zip(names, frags))
    n = len(rows)
    return rows, {c: by_name.get(c, ["null"] * n) for c in wanted}


def _batch_keys(batch: LoggedBatch) -> tuple[list[int], list[bool], list[str]]:
    """(item index, defaults flag, request id) per row as plain Python values."""
    items = [int(i) for i in np.asarray(batch.item_index).tolist()]
    defaults = [bool(d) for d in np.asarray(batch.defaults_used).tolist()]
    rids = [batch.request_id] * len(items) if batch.row_request_ids is None else \
        [str(r) for r in batch.row_request_ids]
    return items, defaults, rids


def _prediction_ids(batch: LoggedBatch, items: list[int], rids: list[str]) -> list[str]:
    if batch.family != "demand":
        return [f"{rid}:{item}" for rid, item in zip(rids, items)]
    horizons = batch.inputs["horizon"].to_numpy()
    return [f"{rid}:{item}:{int(h)}" for rid, item, h in zip(rids, items, horizons)]


def _group_lines(group: list[LoggedBatch]) -> list[str]:
    """The log lines of a run of batches (see `record_lines`), keys in RECORD_KEYS order."""
    family = group[0].family
    entity_cols = ENTITY_COLUMNS[family]
    event_col = EVENT_TIME_COLUMN[family]
    inputs, by_column = _table_json([b.inputs for b in group], (*entity_cols, event_col))
    features, _ = _table_json([b.features for b in group], ())
    outputs, _ = _table_json([b.outputs for b in group], ())
    entity_keys = [f"{_encode_str(c)}:" for c in entity_cols]
    entities = list(map(",".join, zip(*(map(key.__add__, by_column[c]) for key, c in zip(entity_keys, entity_cols)))))
    events = by_column[event_col]
    lines = []
    models: dict[tuple, str] = {}  # the same few endpoint/model pairs in every batch of a run
    j = 0
    for batch in group:
        logged_at = batch.logged_at.astimezone(timezone.utc).isoformat()
        items, defaults, rids = _batch_keys(batch)
        pids = _prediction_ids(batch, items, rids)
        model_key = (batch.endpoint, batch.model_name, batch.model_version)
        if model_key not in models:
            models[model_key] = (f',"family":{_encode_line(family)},"endpoint":{_encode_line(batch.endpoint)}'
                                 f',"model_name":{_encode_line(batch.model_name)}'
                                 f',"model_version":{_encode_line(batch.model_version)},"event_time":')
        middle = f',"logged_at":{_encode_str(logged_at)}{models[model_key]}'
        for k in range(n_rows(batch.inputs)):
            lines.append(f'{{"prediction_id":{_encode_str(pids[k])},"request_id":{_encode_str(rids[k])}{middle}'
                         f'{events[j]},"entity":{{{entities[j]}}},"inputs":{{{inputs[j]}}}'
                         f',"features":{{{features[j]}}},"outputs":{{{outputs[j]}}}'
                         f',"defaults_used":{"true" if defaults[k] else "false"}}}')
            j += 1
    return lines


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
        self._encoded: deque[tuple[Path, list[str]]] = deque()  # lines not yet written, oldest first
        self._lock = threading.Lock()  # one flush at a time (timer thread vs close())
        self._encode_lock = threading.Lock()  # queued -> encoded keeps the order of the records
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def append(self, batch: LoggedBatch | None) -> None:
        """Queue a batch (request path: constant time, no IO)."""
        if batch is not None:
            self._pending.append(batch)

    @property
    def pending(self) -> int:
        """Batches not yet encoded plus encoded groups not yet written."""
        return len(self._pending) + len(self._encoded)

    def encode_pending(self, max_records: int | None = None) -> int:
        """Encode queued batches into log lines, oldest first, stopping once `max_records` are done (None: all);
        returns how many were encoded. `flush` writes them."""
        with self._encode_lock:
            batches: list[LoggedBatch] = []
            count = 0
            while self._pending and (max_records is None or count < max_records):
                batch = self._pending.popleft()
                batches.append(batch)
                count += len(batch.item_index)
            if not batches:
                return 0
            try:
                by_path: dict[Path, list[LoggedBatch]] = defaultdict(list)
                for batch in batches:
                    by_path[log_path(batch.family, batch.logged_at.astimezone(timezone.utc).date(), self.root)].append(batch)
                encoded = [(path, record_lines(path_batches)) for path, path_batches in by_path.items()]
            except Exception:
                self._pending.extendleft(reversed(batches))
                raise
            self._encoded.extend(encoded)
            return count

    def encode_in_slices(self) -> int:
        """Encode the queue ENCODE_SLICE_RECORDS at a time with a pause after each slice (the GIL is free for
        requests meanwhile); past half a flush interval the rest goes in one call. Returns records encoded."""
        deadline = time.monotonic() + self.flush_interval_s / 2
        total = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            done = self.encode_pending(ENCODE_SLICE_RECORDS)
            if not done:
                return total
            total += done
            time.sleep(ENCODE_PAUSE_S)
        return total + self.encode_pending()

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
                self.encode_in_slices()
                self.flush()
            except Exception:  # keep flushing later; the records stay queued
                logger.exception("prediction log flush failed; will retry")

    def flush(self) -> int:
        """Encode what is still queued and write every encoded line now; returns the records written."""
        with self._lock:
            self.encode_pending()
            groups: list[tuple[Path, list[str]]] = []
            with self._encode_lock:
                while self._encoded:
                    groups.append(self._encoded.popleft())
            if not groups:
                return 0
            lines: dict[Path, list[str]] = defaultdict(list)
            for path, group_lines in groups:
                lines[path].extend(group_lines)
            written: list[Path] = []
            try:
                for path, file_lines in lines.items():
                    _append(path, ("\n".join(file_lines) + "\n").encode("utf-8"), self.fsync)
                    written.append(path)
            except Exception:
                # keep what was not written for the next flush, still ahead of anything encoded since
                with self._encode_lock:
                    kept = [(p, ls) for p, ls in lines.items() if p not in written]
                    self._encoded.extendleft(reversed(kept))
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
