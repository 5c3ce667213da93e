"""Offline store: canonical tables as Parquet files under $TRADECAST_HOME/offline, written atomically.

A write goes to a temporary file in the same folder and is renamed over the old one, so a failed or
interrupted write leaves the previous data intact. Table metadata (frequency, source) rides in the
Parquet schema metadata.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tradecast.errors import TradecastError
from tradecast.paths import ensure_dir, table_path

META_KEY = b"tradecast"


def write_parquet_atomic(df: pd.DataFrame, path: Path, metadata: dict[str, Any] | None = None,
                         pandas_metadata: bool = True) -> Path:
    """Write `df` to `path` via a temporary file and an atomic rename.

    `pandas_metadata=False` drops pandas' schema metadata (Feast's dask reader cannot parse the pandas dtype
    names of Arrow list columns; the Arrow types carry everything)."""
    ensure_dir(path.parent)
    table = pa.Table.from_pandas(df, preserve_index=False)
    if not pandas_metadata:
        table = table.replace_schema_metadata({})
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged[META_KEY] = json.dumps(metadata, default=str).encode()
        table = table.replace_schema_metadata(merged)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_table(table: str, df: pd.DataFrame, frequency: str = "D", source: str = "synthetic", **extra: Any) -> Path:
    """Write a canonical table to the offline store, replacing the previous version atomically."""
    meta = {"table": table, "frequency": frequency, "source": source, "rows": len(df), **extra}
    return write_parquet_atomic(df, table_path(table), meta)


def read_table(table: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a canonical table from the offline store."""
    path = table_path(table)
    if not path.exists():
        raise TradecastError(
            f"table '{table}' is not in the offline store ({path}); run `tradecast data generate` or `tradecast data ingest`"
        )
    return pd.read_parquet(path, columns=columns)


def table_metadata(table: str) -> dict[str, Any]:
    """The tradecast metadata stored with a table (frequency, source, rows, ...); empty if none."""
    path = table_path(table)
    if not path.exists():
        return {}
    raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


def table_exists(table: str) -> bool:
    """Whether the offline store holds `table`."""
    return table_path(table).exists()
