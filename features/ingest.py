"""Bring-your-own data: read a CSV/Parquet file, map it onto a canonical table, validate, write atomically.

`ingest_file(table, source, mapping)` is the whole job (`tradecast data ingest` calls it):

1. read the file: CSV (also .csv.gz, .csv.bz2, .csv.xz, or a .zip holding exactly one CSV; a UTF-8 byte-order
   mark is dropped) or Parquet (.parquet/.pq). CSV cells are read as text so ids keep leading zeros; the
   schema validator converts types;
2. apply the mapping (features/mapping.py: filters, renames, constants, value maps, unit conversions, date
   formats, derived columns); without a mapping the file's columns must already be the canonical ones;
3. validate against the canonical schema (features/schema.py): types, required columns, ranges, allowed
   values, unique keys, date sanity, references to tables already in the offline store, and for weekly
   data one date per week (all dates on the same weekday);
4. write to the offline store with the frequency in the table metadata. The write is a temporary file
   renamed over the old one, and nothing is written when there is any problem, so a failed ingest leaves
   the previous data byte-identical.

Every problem is collected and raised at once as a DataValidationError naming the column and up to five
example rows. Row numbers are data rows of the source file counted from 1 (row 1 is the first row after a
CSV header), before any filter, so they point into the file the user has.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.mapping import ColumnSpec, Mapping, ReadOptions, load_mapping, map_key_text
from features.schema import Problem, get_schema, validate_table
from tradecast.errors import DataValidationError, TradecastError

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
PARQUET_SUFFIXES = (".parquet", ".pq")
EXAMPLE_ROWS = 5
FREQUENCY_NAMES = {"D": "daily", "W": "weekly"}


@dataclass(frozen=True)
class IngestResult:
    """What an ingest wrote: table, row count, offline-store path, frequency and where it came from."""

    table: str
    rows: int
    path: Path
    frequency: str
    source: Path
    mapping: Path | None = None
    dropped_rows: int = 0
    references_checked: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """One-line summary for the CLI."""
        via = f" via {self.mapping.name}" if self.mapping else ""
        dropped = f", {self.dropped_rows:,} row(s) dropped by filters" if self.dropped_rows else ""
        refs = f", references checked against {', '.join(self.references_checked)}" if self.references_checked else ""
        freq = FREQUENCY_NAMES.get(self.frequency, self.frequency)
        return (f"{self.table}: wrote {self.rows:,} row(s), {freq} frequency, from {self.source.name}{via}{dropped}"
                f"{refs} -> {self.path}")


def ingest_file(table: str, source: Path, mapping: Path | None = None) -> IngestResult:
    """Read `source`, map it with `mapping` (a YAML file) if given, validate it as `table` and write it.

    Raises DataValidationError listing every problem (nothing is written), ConfigError for a bad mapping
    file, TradecastError for an unreadable file.
    """
    from features.offline import write_table

    schema = get_schema(table)
    source = Path(source)
    spec = load_mapping(mapping, table=table) if mapping is not None else Mapping(table=table)
    raw = read_source(source, spec.read)
    if mapping is not None:
        mapped = apply_mapping(raw, spec)
        frame, dropped, problems, failed = mapped.frame, mapped.dropped, mapped.problems, mapped.failed
    else:
        frame, dropped, problems, failed = raw, 0, [], {}
    known = reference_keys(table) if spec.check_references else {}
    clean, schema_problems = validate_table(table, frame, known=known)
    source_rows = frame.index.to_numpy()  # validate_table numbers rows by position in `frame`
    problems += _schema_problems(schema_problems, clean, source_rows, failed)
    if spec.frequency == "W" and schema.time_column and clean[schema.time_column].notna().any():
        problems += weekly_problems(clean[schema.time_column], source_rows)
    if not len(clean) and not problems:
        problems.append(Problem("*", f"no rows to write ({len(raw):,} read, {dropped:,} dropped by filters)"))
    if problems:
        raise DataValidationError(table, problems)
    path = write_table(table, clean, frequency=spec.frequency, source=str(source),
                       mapping=str(mapping) if mapping else None, dropped_rows=dropped)
    return IngestResult(table=table, rows=len(clean), path=path, frequency=spec.frequency, source=source,
                        mapping=Path(mapping) if mapping else None, dropped_rows=dropped,
                        references_checked=tuple(sorted(known)))


def read_source(source: Path, options: ReadOptions | None = None) -> pd.DataFrame:
    """Read a CSV (plain, compressed or a one-CSV zip) or Parquet file into a frame with a 0-based index."""
    options = options or ReadOptions()
    if not source.exists():
        raise TradecastError(f"{source}: file not found")
    if not source.is_file():
        raise TradecastError(f"{source}: not a file")
    suffixes = [s.lower() for s in source.suffixes]
    try:
        if suffixes and suffixes[-1] in PARQUET_SUFFIXES:
            df = pd.read_parquet(source)
        elif suffixes and suffixes[-1] == ".zip":
            with zipfile.ZipFile(source) as archive:
                member = _single_csv_member(source, archive)
                with archive.open(member) as handle:
                    df = _read_csv(io.BufferedReader(handle), options)
        elif suffixes and (suffixes[-1] in CSV_SUFFIXES
                           or (suffixes[-1] in COMPRESSED_SUFFIXES and len(suffixes) > 1 and suffixes[-2] in CSV_SUFFIXES)):
            df = _read_csv(source, options)
        else:
            raise TradecastError(f"{source}: unsupported file type; use .csv (optionally .gz/.bz2/.xz/.zip) or .parquet")
    except TradecastError:
        raise
    except (UnicodeDecodeError, LookupError) as exc:
        raise TradecastError(f"{source}: cannot decode with encoding '{options.encoding}' ({exc}); "
                             "set read.encoding in the mapping (e.g. latin-1)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise TradecastError(f"{source}: cannot read the file: {exc}") from None
    # A byte-order mark survives when the file was read with plain utf-8; never let it rename a column.
    df.columns = [str(c).lstrip("\ufeff").strip() for c in df.columns]
    duplicated = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if duplicated:
        raise TradecastError(f"{source}: duplicate column name(s) in the header: {', '.join(duplicated)}")
    return df.reset_index(drop=True)


def _read_csv(handle, options: ReadOptions) -> pd.DataFrame:
    return pd.read_csv(handle, sep=options.delimiter, encoding=options.encoding, dtype=str,
                       na_values=options.na_values or None, keep_default_na=True, skipinitialspace=False)


def _single_csv_member(source: Path, archive: zipfile.ZipFile) -> str:
    members = [m for m in archive.namelist() if not m.endswith("/") and not m.startswith("__MACOSX/")]
    csvs = [m for m in members if m.lower().endswith(CSV_SUFFIXES)]
    if len(csvs) != 1:
        raise TradecastError(f"{source}: a .zip must hold exactly one CSV file; found {len(csvs)} "
                             f"({', '.join(members) or 'empty archive'})")
    return csvs[0]


@dataclass
class MappedFrame:
    """The result of applying a mapping: canonical frame (index = source row positions), rows dropped by
    filters, mapping problems, and per canonical column the rows whose value could not be built."""

    frame: pd.DataFrame
    dropped: int
    problems: list[Problem]
    failed: dict[str, pd.Series]


class _Collector:
    """Collects mapping problems and remembers which canonical column and rows each one broke."""

    def __init__(self, index: pd.Index, planned: list[str]) -> None:
        self.problems: list[Problem] = []
        self.failed: dict[str, pd.Series] = {}
        self.index = index
        self.planned = planned  # canonical columns of the mapping, in build order

    def add(self, name: str, column: str, message: str, mask: pd.Series | None = None) -> None:
        """Problem on source `column` while building canonical `name`; `mask` marks the bad rows (None: all)."""
        mask = pd.Series(True, index=self.index) if mask is None else mask.fillna(False).astype(bool)
        rows = tuple(int(r) + 1 for r in mask[mask].index[:EXAMPLE_ROWS]) if len(mask) > mask.sum() else ()
        self.problems.append(Problem(column, message, rows))
        self.failed[name] = self.failed.get(name, pd.Series(False, index=self.index)) | mask


def apply_mapping(raw: pd.DataFrame, mapping: Mapping) -> MappedFrame:
    """Filter rows and build the canonical columns of `mapping` from the source frame `raw`.

    The frame keeps the source row positions as its index so problems can point at source rows.
    """
    filter_problems: list[Problem] = []
    keep = pd.Series(True, index=raw.index)
    for flt in mapping.filters:
        if flt.column not in raw.columns:
            filter_problems.append(_missing_source(flt.column, raw, "filters"))
            continue
        text = _norm_text(raw[flt.column])
        if flt.in_ is not None:
            keep &= text.isin([map_key_text(v) for v in flt.in_])
        elif flt.not_in is not None:
            keep &= ~text.isin([map_key_text(v) for v in flt.not_in])
        elif flt.not_null:
            keep &= raw[flt.column].notna()
    rows = raw[keep.to_numpy()]
    out = pd.DataFrame(index=rows.index)
    collect = _Collector(rows.index, list(mapping.columns))
    for name, spec in mapping.columns.items():
        values = build_column(name, spec, rows, out, collect)
        if values is not None:
            out[name] = values
    numeric = [c.name for c in get_schema(mapping.table).columns if c.kind in ("int", "float") and c.name in out]
    if mapping.read.decimal != "." or mapping.read.thousands:
        for name in numeric:
            out[name] = _localised_numbers(out[name], mapping.read)
    return MappedFrame(out, int((~keep).sum()), filter_problems + collect.problems, collect.failed)


def _schema_problems(problems: list[Problem], clean: pd.DataFrame, source_rows: np.ndarray,
                     failed: dict[str, pd.Series]) -> list[Problem]:
    """Schema problems renumbered as 1-based source rows, without repeating what the mapping reported.

    A value the mapping could not build (unmapped, bad date, missing source column) is null in the frame;
    the schema would call it an empty required value a second time, so only other empty rows are kept.
    """
    out: list[Problem] = []
    for p in problems:
        if p.column in failed:
            bad = failed[p.column].to_numpy()
            if p.message == "required column is missing":
                continue
            if p.message.endswith("required value(s) are empty"):
                empty = clean[p.column].isna().to_numpy() & ~bad
                if empty.any():
                    rows = tuple(int(source_rows[i]) + 1 for i in np.flatnonzero(empty)[:EXAMPLE_ROWS])
                    out.append(Problem(p.column, f"{int(empty.sum())} required value(s) are empty", rows))
                continue
        out.append(Problem(p.column, p.message, tuple(int(source_rows[r]) + 1 for r in p.rows)))
    return out


def build_column(name: str, spec: ColumnSpec, rows: pd.DataFrame, built: pd.DataFrame,
                 collect: _Collector) -> pd.Series | None:
    """One canonical column from its spec; records problems and returns None when it cannot be built."""
    kind = spec.source_kind
    label = name
    if kind == "from":
        values = _column(spec.from_, rows, built, name, collect)
        label = spec.from_
    elif kind == "value":
        values = pd.Series([spec.value] * len(rows), index=rows.index, dtype=object)
    elif kind == "template":
        values = _template(name, spec.template, rows, built, collect)
    elif kind == "compare":
        values = _compare(name, spec, rows, built, collect)
    elif kind == "add_days":
        values = _add_days(name, spec, rows, built, collect)
    elif kind == "sequence":
        values = _sequence(spec, rows)
    else:  # coalesce
        parts = [build_column(name, part, rows, built, collect) for part in spec.coalesce]
        if any(p is None for p in parts):
            return None
        values = parts[0].astype(object)
        for part in parts[1:]:
            values = values.where(values.notna(), part.astype(object))
    if values is None:
        return None
    return _transform(name, label, spec, values, collect)


def _transform(name: str, label: str, spec: ColumnSpec, values: pd.Series, collect: _Collector) -> pd.Series | None:
    if spec.date_format and not pd.api.types.is_datetime64_any_dtype(values):  # Parquet dates are dates already
        text = values.astype("string").str.strip()
        parsed = pd.to_datetime(text, format=spec.date_format, errors="coerce")
        bad = parsed.isna() & text.notna()
        if bad.any():
            collect.add(name, label, f"{int(bad.sum())} value(s) do not match date_format "
                                            f"'{spec.date_format}' (for '{name}'), e.g. {_samples(text[bad])}", bad)
        values = parsed
    if spec.map is not None:
        values = _value_map(name, label, spec, values, collect)
    if spec.multiply is not None or spec.clip_min is not None or spec.clip_max is not None:
        numbers = _numbers(name, label, values, collect)
        if spec.multiply is not None:
            numbers = numbers * spec.multiply
        if spec.clip_min is not None or spec.clip_max is not None:
            numbers = numbers.clip(lower=spec.clip_min, upper=spec.clip_max)
        values = numbers
    return values


def _value_map(name: str, label: str, spec: ColumnSpec, values: pd.Series, collect: _Collector) -> pd.Series:
    text = _norm_text(values)
    exact = spec.map
    folded = {k.casefold(): v for k, v in exact.items()}
    hit_exact = text.isin(list(exact))
    folded_text = text.str.casefold()
    hit_folded = ~hit_exact & folded_text.isin(list(folded))
    mapped = pd.Series(None, index=values.index, dtype=object)
    mapped[hit_exact] = text[hit_exact].map(exact)
    mapped[hit_folded] = folded_text[hit_folded].map(folded)
    unmapped = text.notna() & ~hit_exact & ~hit_folded
    if unmapped.any():
        if spec.unmapped == "error":
            collect.add(name, label, f"{int(unmapped.sum())} value(s) not in the map for '{name}': "
                                            f"{_samples(text[unmapped])}; add them to the map or set unmapped: keep/null",
                                     unmapped)
        elif spec.unmapped == "keep":
            mapped[unmapped] = values[unmapped]
    return mapped


def _column(ref: str, rows: pd.DataFrame, built: pd.DataFrame, name: str, collect: _Collector) -> pd.Series | None:
    """A referenced column: a canonical column built earlier, else a source column."""
    if ref in built.columns:
        return built[ref]
    if ref in rows.columns:
        return rows[ref]
    if ref in collect.failed:
        # depends on a canonical column that could not be built: that problem is already reported
        collect.failed[name] = pd.Series(True, index=collect.index)
        return None
    if ref in collect.planned:
        collect.add(name, ref, f"'{name}' uses '{ref}', which the mapping builds later: move '{ref}' above '{name}'")
        return None
    missing = _missing_source(ref, rows, f"columns.{name}")
    collect.add(name, missing.column, missing.message)
    return None


def _template(name: str, template: str, rows: pd.DataFrame, built: pd.DataFrame, collect: _Collector) -> pd.Series | None:
    import re

    pieces = re.split(r"\{([^{}]+)\}", template)  # even positions: literal text, odd: column names
    result = pd.Series("", index=rows.index, dtype="string")
    ok = True
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            result = result + piece
            continue
        col = _column(piece, rows, built, name, collect)
        if col is None:
            ok = False
            continue
        result = result + _as_text(col)
    return result if ok else None


def _compare(name: str, spec: ColumnSpec, rows: pd.DataFrame, built: pd.DataFrame, collect: _Collector) -> pd.Series | None:
    cmp = spec.compare
    left = _column(cmp.left, rows, built, name, collect)
    right = _column(cmp.right, rows, built, name, collect) if cmp.right is not None else \
        pd.Series([cmp.value] * len(rows), index=rows.index, dtype=object)
    if left is None or right is None:
        return None
    left_num, right_num = _to_number(left), _to_number(right)
    numeric = not ((left_num.isna() & left.notna()).any() or (right_num.isna() & right.notna()).any())
    if numeric:
        a, b = left_num, right_num
    elif cmp.op in ("==", "!="):
        a, b = _norm_text(left), _norm_text(right)
    else:
        side, series, nums = (cmp.left, left, left_num) if (left_num.isna() & left.notna()).any() else \
            (cmp.right or "value", right, right_num)
        bad = nums.isna() & series.notna()
        collect.add(name, side, f"{int(bad.sum())} value(s) are not numbers, needed for '{name}' "
                                       f"({cmp.op}), e.g. {_samples(series[bad])}", bad)
        return None
    ops = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal,
           "==": np.equal, "!=": np.not_equal}
    both = a.notna() & b.notna()
    flag = pd.Series(pd.NA, index=rows.index, dtype="boolean")
    flag[both] = ops[cmp.op](a[both].to_numpy(), b[both].to_numpy())
    return flag


def _add_days(name: str, spec: ColumnSpec, rows: pd.DataFrame, built: pd.DataFrame, collect: _Collector) -> pd.Series | None:
    start = _column(spec.add_days.start, rows, built, name, collect)
    days = _column(spec.add_days.days, rows, built, name, collect)
    if start is None or days is None:
        return None
    if not pd.api.types.is_datetime64_any_dtype(start):
        parsed = pd.to_datetime(start, errors="coerce", format="mixed")
        bad = parsed.isna() & start.notna()
        if bad.any():
            collect.add(name, spec.add_days.start, f"{int(bad.sum())} value(s) are not dates, needed for "
                                                          f"'{name}', e.g. {_samples(start[bad])}", bad)
            return None
        start = parsed
    number = _numbers(name, spec.add_days.days, days, collect)
    return start + pd.to_timedelta(number, unit="D")


def _sequence(spec: ColumnSpec, rows: pd.DataFrame) -> pd.Series:
    seq = spec.sequence
    position = rows.index.to_numpy()
    if seq.shuffle_seed is not None:
        # The rank of each source row in a seeded permutation of all source rows: stable for a given file.
        order = np.random.default_rng(seq.shuffle_seed).permutation(int(position.max()) + 1 if len(position) else 0)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        position = rank[position]
    start = pd.Timestamp(seq.start).tz_localize(None) if pd.Timestamp(seq.start).tz else pd.Timestamp(seq.start)
    return pd.Series(start + pd.to_timedelta(position * seq.step_hours, unit="h"), index=rows.index)


def _numbers(name: str, label: str, values: pd.Series, collect: _Collector) -> pd.Series:
    numbers = _to_number(values)
    bad = numbers.isna() & values.notna()
    if bad.any():
        collect.add(name, label, f"{int(bad.sum())} value(s) are not numbers (for '{name}'), "
                                        f"e.g. {_samples(values[bad])}", bad)
    return numbers


def _to_number(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    return pd.to_numeric(values, errors="coerce").astype("float64")


def _localised_numbers(values: pd.Series, options: ReadOptions) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values):
        return values
    text = values.astype("string")
    if options.thousands:
        text = text.str.replace(options.thousands, "", regex=False)
    if options.decimal != ".":
        text = text.str.replace(options.decimal, ".", regex=False)
    return text


def _as_text(values: pd.Series) -> pd.Series:
    """Text of a column for templates: whole floats print without '.0' (ids read from Parquet/numbers)."""
    if pd.api.types.is_float_dtype(values):
        whole = values.notna() & (values == np.floor(values))
        text = values.astype("string")
        text[whole] = values[whole].astype("int64").astype("string")
        return text
    return values.astype("string").str.strip()


def _norm_text(values: pd.Series) -> pd.Series:
    """Trimmed text with inner whitespace collapsed and booleans as true/false (for maps and filters)."""
    if pd.api.types.is_bool_dtype(values):
        return values.map({True: "true", False: "false"}).astype("string")
    return _as_text(values).str.replace(r"\s+", " ", regex=True).str.strip()


def _missing_source(column: str, rows: pd.DataFrame, where: str) -> Problem:
    cols = ", ".join(map(str, rows.columns))
    return Problem(column, f"source column named in the mapping ({where}) is not in the file (file columns: {cols})")


def _samples(values: pd.Series, limit: int = 3) -> list[str]:
    return [str(v) for v in pd.unique(values.dropna().astype(str))[:limit]]


def weekly_problems(dates: pd.Series, source_rows: np.ndarray) -> list[Problem]:
    """Weekly data needs one date per week: every date on the same weekday."""
    known = dates.dropna()
    weekday = known.dt.dayofweek
    common = int(weekday.mode().iloc[0])
    off = dates.notna() & (dates.dt.dayofweek != common)
    if not off.any():
        return []
    names = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    rows = tuple(int(source_rows[i]) + 1 for i in np.flatnonzero(off.to_numpy())[:EXAMPLE_ROWS])
    return [Problem(dates.name or "date", f"{int(off.sum())} date(s) are not on {names[common]}, the weekday of the "
                                          f"other weeks: weekly data needs one date per week", rows)]


def reference_keys(table: str) -> dict[str, set[str]]:
    """Keys of the tables `table` references that are already in the offline store (for validate_table)."""
    from features.offline import read_table, table_exists

    known: dict[str, set[str]] = {}
    for ref_table in set(get_schema(table).references.values()):
        if table_exists(ref_table):
            key = get_schema(ref_table).key[0]
            known[ref_table] = set(read_table(ref_table, columns=[key])[key].astype(str))
    return known
