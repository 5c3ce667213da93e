"""Online-store access for the request path: Feast's OnlineStore interface with the feature views resolved once.

`feast.FeatureStore.get_online_features` and `.push` re-resolve the registry, convert every value through
protobuf and pandas/arrow and build a response object on each call: several milliseconds of CPU per call,
and a scored order needs one lookup plus a read and a write of three activity views. `OnlineTables` calls the
same provider methods that Feast's own lookup and push end in — `online_read(config, view, entity_keys,
features)` and `online_write_batch(config, view, rows, progress)` — with the `FeatureView` objects taken from
the registry once, so the stored rows and the values read are exactly Feast's (tests compare both paths on
SQLite and Redis). Serving restarts after `tradecast features apply`, so a cached view cannot go stale.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import feast


def _python_value(value: Any) -> Any:
    """A scalar ValueProto as Python (None for a null), as `OnlineResponse.to_dict()` returns it."""
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    return getattr(value, kind)


@lru_cache(maxsize=1 << 16)
def _entity_key(join_key: str, value: str) -> Any:
    """The EntityKey proto of one string key, built once per (recently seen) entity: Feast only reads it
    (serialize_entity_key), and a scored order needs one per view read and written."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=[join_key], entity_values=[Value(string_val=value)])


class OnlineTables:
    """Read and write feature-view rows of a store's online store by entity key (any Feast online store)."""

    def __init__(self, store: "feast.FeatureStore") -> None:
        self.store = store
        self.config = store.config
        self.provider = store._get_provider()
        self._views: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._recorded = threading.local()

    def view(self, name: str) -> Any:
        """The registry's FeatureView `name`, resolved on first use."""
        found = self._views.get(name)
        if found is None:
            found = self.store.get_feature_view(name)
            self._views[name] = found
        return found

    @staticmethod
    def entity_key(join_key: str, value: str) -> Any:
        return _entity_key(join_key, value)

    def read(self, view: str, join_key: str, ids: Sequence[str], names: Sequence[str],
             known: dict[str, dict[str, Any]] | None = None) -> dict[str, list[Any]]:
        """Feature name -> one value per id (None when the entity or the value is not in the store).
        Repeated ids are read once. `known`: rows this caller has just written (`recording_writes`), entity id ->
        {feature: value}; those ids are answered from it instead of being read back, with the same values."""
        unique = list(dict.fromkeys(ids))
        known = {i: known[i] for i in unique if i in known and all(n in known[i] for n in names)} if known else {}
        to_read = [i for i in unique if i not in known]
        stored: dict[str, dict[str, Any] | None] = {}
        if to_read:
            rows = self.provider.online_read(self.config, self.view(view),
                                             [self.entity_key(join_key, i) for i in to_read], list(names))
            stored = {i: values for i, (_, values) in zip(to_read, rows)}
        out: dict[str, list[Any]] = {}
        for name in names:
            column = []
            for i in ids:
                if i in known:
                    column.append(known[i][name])
                    continue
                values = stored[i]
                value = values.get(name) if values else None
                column.append(None if value is None else _python_value(value))
            out[name] = column
        return out

    def write(self, view: str, join_key: str, rows: Sequence[tuple[str, dict[str, Any], datetime]]) -> None:
        """Upsert (entity id, {feature: value}, event time) rows, as Feast's push writes them: floats as
        double values, strings as string values, None as a null; no created timestamp."""
        from feast.protos.feast.types.Value_pb2 import Value

        def proto(v: Any) -> Any:
            if v is None:
                return Value()
            if isinstance(v, str):
                return Value(string_val=v)
            return Value(double_val=float(v))

        data = [(self.entity_key(join_key, entity), {n: proto(v) for n, v in values.items()},
                 ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc), None) for entity, values, ts in rows]
        if data:
            self.provider.online_write_batch(self.config, self.view(view), data, progress=None)
            written = getattr(self._recorded, "rows", None)
            if written is not None:  # as `read` would return them: floats as float, strings, None
                kept = written.setdefault(view, {})
                for entity, values, _ in rows:
                    kept[entity] = {n: v if v is None or isinstance(v, str) else float(v) for n, v in values.items()}

    @contextmanager
    def recording_writes(self) -> Iterator[dict[str, dict[str, dict[str, Any]]]]:
        """Collect the rows this thread writes inside the block: view -> entity id -> {feature: value}.

        Serving pushes an order's velocity rows, then looks up the same rows: passing what was written as
        `read(..., known=...)` saves reading back (and parsing) three views per scored order."""
        rows: dict[str, dict[str, dict[str, Any]]] = {}
        self._recorded.rows = rows
        try:
            yield rows
        finally:
            self._recorded.rows = None

    @contextmanager
    def one_transaction(self) -> Iterator[None]:
        """Writes inside the block commit once, together (SQLite online store; other stores unchanged).

        Feast's SQLite store commits each `online_write_batch` (`with conn:`): three commits per scored order.
        Inside this block its connection is lent out behind a proxy whose `with` does not commit; the block
        commits at the end, or rolls every write back on an error. Rows written are the same.
        """
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        online = getattr(self.provider, "online_store", None)
        if not isinstance(online, SqliteOnlineStore):
            yield
            return
        with self._lock:
            conn = online._get_conn(self.config)
            online._conn = _CommitLater(conn)
            try:
                with conn:  # commit on success, roll back on an exception
                    yield
            finally:
                online._conn = conn

    def use_wal(self) -> None:
        """Put a SQLite online store in WAL mode with synchronous=NORMAL for this process's connection."""
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        online = getattr(self.provider, "online_store", None)
        if isinstance(online, SqliteOnlineStore):
            conn = online._get_conn(self.config)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")


class _CommitLater:
    """A sqlite3 connection whose context manager neither commits nor rolls back (the owner of the transaction
    does); everything else is the wrapped connection."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def __enter__(self) -> "_CommitLater":
        return self

    def __exit__(self, *exc: Any) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)
