"""features/ingest.py + features/mapping.py on small hand-made files: reading, mapping, problems, atomicity."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from features.ingest import ingest_file, read_source
from features.mapping import load_mapping
from features.offline import read_table, table_metadata, write_table
from tradecast.errors import ConfigError, DataValidationError, TradecastError
from tradecast.paths import offline_dir, table_path

SHIP_CSV = """ID,Block,Mode,Grams,Late,Day,Sched,Real
1,A,Flight,1500,1,01/02/2024 10:30,2,3
2,B,Ship,250,0,01/03/2024 11:00,5,4
3,A,Road,40000,1,01/04/2024 09:15,1,1
"""

SHIP_MAPPING = """
table: shipments
columns:
  shipment_id: {template: "X-{ID}"}
  created_at: {from: Day, date_format: "%m/%d/%Y %H:%M"}
  origin_warehouse: {template: "WH-{Block}"}
  destination_market: {value: DE}
  lane: {template: "{origin_warehouse}>{destination_market}"}
  mode: {from: Mode, map: {flight: air, Ship: sea, Road: express}}
  carrier: {value: c1}
  weight_kg: {from: Grams, multiply: 0.001}
  promised_days: Sched
  transit_days: Real
  delivered_at: {add_days: {start: created_at, days: transit_days}}
  late: {compare: {left: Real, op: ">", right: Sched}}
"""


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


@pytest.fixture
def ship_files(tmp_path: Path) -> tuple[Path, Path]:
    return write(tmp_path / "ship.csv", SHIP_CSV), write(tmp_path / "ship.yaml", SHIP_MAPPING)


def problems_of(exc: pytest.ExceptionInfo) -> dict[str, list]:
    out: dict[str, list] = {}
    for p in exc.value.problems:
        out.setdefault(p.column, []).append(p)
    return out


# ---------------------------------------------------------------- mapping vocabulary


def test_mapping_builds_every_kind_of_column(tmp_home, ship_files):
    csv, mapping = ship_files
    result = ingest_file("shipments", csv, mapping)
    df = read_table("shipments")
    assert result.rows == 3 and result.path == table_path("shipments") and result.frequency == "D"
    assert list(df["shipment_id"]) == ["X-1", "X-2", "X-3"]
    assert list(df["lane"]) == ["WH-A>DE", "WH-B>DE", "WH-A>DE"]
    assert list(df["mode"]) == ["air", "sea", "express"]        # 'flight' key matched 'Flight' ignoring case
    assert list(df["weight_kg"]) == pytest.approx([1.5, 0.25, 40.0])
    assert df.loc[0, "created_at"] == pd.Timestamp("2024-01-02 10:30")
    assert df.loc[0, "delivered_at"] == pd.Timestamp("2024-01-05 10:30")
    assert list(df["late"]) == [True, False, False]
    assert "ship.csv" in result.describe() and "3 row(s)" in result.describe()


def test_constants_clip_coalesce_filter_and_null_map(tmp_home, tmp_path):
    csv = write(tmp_path / "s.csv", "Store,Dept,Date,Sales,Hol,Region,Country\n"
                                    "1,1,2024-01-05,-5,TRUE,EU,Francia\n"
                                    "1,2,2024-01-05,10,FALSE,EU,Nowhere\n"
                                    "2,1,2024-01-05,7.5,FALSE,XX,Francia\n")
    mapping = write(tmp_path / "m.yaml", """
table: daily_sales
frequency: W
check_references: false
filters: [{column: Region, in: [EU]}]
columns:
  date: Date
  sku_id: {template: "W{Store}-{Dept}"}
  market:
    coalesce:
      - {from: Country, map: {Francia: FR}, unmapped: null}
      - {from: Region, map: {EU: DE}}
  units: {from: Sales, clip_min: 0}
  promotion_event: {from: Hol, map: {true: us_holiday, false: null}}
""")
    result = ingest_file("daily_sales", csv, mapping)
    df = read_table("daily_sales")
    assert result.rows == 2 and result.dropped_rows == 1 and "1 row(s) dropped" in result.describe()
    assert list(df["market"]) == ["FR", "DE"]
    assert list(df["units"]) == [0.0, 10.0]
    assert list(df["promotion_event"].astype(object).where(df["promotion_event"].notna(), None)) == ["us_holiday", None]
    assert table_metadata("daily_sales")["frequency"] == "W"


def test_sequence_is_deterministic_and_shuffled(tmp_home, tmp_path):
    rows = "\n".join(f"{i},A" for i in range(50))
    csv = write(tmp_path / "s.csv", "ID,Block\n" + rows + "\n")
    mapping = write(tmp_path / "m.yaml", """
table: shipments
columns:
  shipment_id: ID
  created_at: {sequence: {start: "2023-01-01", step_hours: 2, shuffle_seed: 3}}
  origin_warehouse: Block
  destination_market: {value: US}
  lane: {value: A>US}
  mode: {value: air}
  carrier: {value: c}
  weight_kg: {value: 1}
""")
    ingest_file("shipments", csv, mapping)
    first = read_table("shipments")["created_at"]
    ingest_file("shipments", csv, mapping)
    assert read_table("shipments")["created_at"].equals(first)
    hours = ((first - pd.Timestamp("2023-01-01")).dt.total_seconds() / 3600).astype(int)
    assert sorted(hours) == list(range(0, 100, 2))               # every slot used once
    assert not hours.is_monotonic_increasing                       # not file order


def test_compare_with_literal_and_text_equality(tmp_home, tmp_path):
    csv = write(tmp_path / "o.csv", "id,status,total\n1,SUSPECTED_FRAUD,10\n2,COMPLETE,20\n3,,5\n")
    mapping = write(tmp_path / "m.yaml", """
table: orders
columns:
  order_id: id
  ordered_at: {value: "2024-05-01"}
  buyer_id: {value: b}
  merchant_id: {value: m}
  market: {value: US}
  amount: total
  is_fraud: {compare: {left: status, op: "==", value: SUSPECTED_FRAUD}}
""")
    ingest_file("orders", csv, mapping)
    flags = read_table("orders")["is_fraud"]
    assert flags[0] is True or flags[0] == True  # noqa: E712
    assert flags[1] == False  # noqa: E712
    assert pd.isna(flags[2])                      # unknown status -> unknown label


# ---------------------------------------------------------------- reading


def test_bom_gz_zip_and_parquet_read_the_same(tmp_path):
    text = "ID,Mode\n1,Flight\n2,Ship\n"
    plain = read_source(write(tmp_path / "bom.csv", text, encoding="utf-8-sig"))
    assert list(plain.columns) == ["ID", "Mode"]
    gz = tmp_path / "f.csv.gz"
    gz.write_bytes(gzip.compress(text.encode("utf-8-sig")))
    archive = tmp_path / "f.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("inner/f.csv", text)
    parquet = tmp_path / "f.parquet"
    plain.to_parquet(parquet)
    for path in (gz, archive, parquet):
        assert read_source(path).equals(plain), path


def test_explicit_utf8_encoding_still_drops_bom(tmp_home, tmp_path):
    from features.mapping import ReadOptions

    df = read_source(write(tmp_path / "bom.csv", "ID,x\n1,2\n", encoding="utf-8-sig"), ReadOptions(encoding="utf-8"))
    assert list(df.columns) == ["ID", "x"]


def test_ids_keep_leading_zeros(tmp_path):
    assert read_source(write(tmp_path / "z.csv", "id\n007\n"))["id"][0] == "007"


@pytest.mark.parametrize("name,content,match", [
    ("missing.csv", None, "file not found"),
    ("data.xlsx", "x", "unsupported file type"),
    ("bad.parquet", "not parquet", "cannot read"),
])
def test_unreadable_files_are_clear_errors(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(TradecastError, match=match):
        read_source(path)


def test_zip_with_two_csvs_is_refused(tmp_path):
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.csv", "x\n1\n")
        zf.writestr("b.csv", "x\n2\n")
    with pytest.raises(TradecastError, match="exactly one CSV.*a.csv, b.csv"):
        read_source(archive)


def test_wrong_encoding_is_a_clear_error(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("name\nS\xe3o Paulo\n".encode("latin-1"))
    with pytest.raises(TradecastError, match="encoding"):
        read_source(path)


def test_semicolon_and_decimal_comma(tmp_home, tmp_path):
    csv = write(tmp_path / "eu.csv", "id;kg\n1;1,5\n2;0,25\n")
    mapping = write(tmp_path / "m.yaml", """
table: shipments
read: {delimiter: ";", decimal: ","}
columns:
  shipment_id: id
  created_at: {value: "2024-01-01"}
  origin_warehouse: {value: W}
  destination_market: {value: US}
  lane: {value: W>US}
  mode: {value: air}
  carrier: {value: c}
  weight_kg: kg
""")
    ingest_file("shipments", csv, mapping)
    assert list(read_table("shipments")["weight_kg"]) == [1.5, 0.25]


# ---------------------------------------------------------------- problems, all at once


def test_all_problems_reported_together_with_source_rows(tmp_home, tmp_path):
    csv = write(tmp_path / "bad.csv", """ID,Block,Mode,Grams,Day,Keep
1,A,Flight,1500,01/02/2024 10:30,y
2,B,Rocket,250,2024-01-03,y
3,A,Road,heavy,01/04/2024 09:15,n
4,A,Road,-10,01/04/2024 09:15,y
4,A,Road,10,01/04/2024 09:15,y
""")
    mapping = write(tmp_path / "m.yaml", """
table: shipments
filters: [{column: Keep, in: [y]}]
columns:
  shipment_id: ID
  created_at: {from: Day, date_format: "%m/%d/%Y %H:%M"}
  origin_warehouse: {template: "WH-{Block}"}
  destination_market: {value: DE}
  lane: {template: "{origin_warehouse}>{destination_market}"}
  mode: {from: Mode, map: {Flight: air, Road: express}}
  carrier: {from: Carrier}
  weight_kg: {from: Grams, multiply: 0.001}
""")
    with pytest.raises(DataValidationError) as exc:
        ingest_file("shipments", csv, mapping)
    got = problems_of(exc)
    # row numbers are 1-based data rows of the source file, even after the filter dropped row 3
    assert got["Mode"][0].rows == (2,) and "Rocket" in got["Mode"][0].message
    assert got["Day"][0].rows == (2,) and "date_format" in got["Day"][0].message
    assert "not in the file" in got["Carrier"][0].message and "ID, Block" in got["Carrier"][0].message
    assert "carrier" not in got                       # the missing source column is reported once, by its name
    assert any("below the minimum" in p.message and p.rows == (4,) for p in got["weight_kg"])
    assert got["shipment_id"][0].rows == (5,) and "duplicate" in got["shipment_id"][0].message
    assert "Grams" not in got                         # 'heavy' is on the filtered-out row 3
    message = str(exc.value)
    assert message.startswith("shipments: 5 problem(s) found, nothing was written")
    assert not table_path("shipments").exists()


def test_non_numeric_unit_conversion_is_a_problem(tmp_home, ship_files, tmp_path):
    csv = write(tmp_path / "s.csv", SHIP_CSV.replace("1500", "1.5kg"))
    with pytest.raises(DataValidationError) as exc:
        ingest_file("shipments", csv, ship_files[1])
    got = problems_of(exc)
    assert got["Grams"][0].rows == (1,) and "not numbers" in got["Grams"][0].message


def test_without_mapping_columns_must_be_canonical(tmp_home, tmp_path):
    csv = write(tmp_path / "c.csv", "date,sku_id,market,units,colour\n2024-01-01,A,US,3,red\n2024-01-02,A,XX,,red\n")
    with pytest.raises(DataValidationError) as exc:
        ingest_file("daily_sales", csv)
    got = problems_of(exc)
    assert set(got) == {"colour", "market", "units"}
    assert got["market"][0].rows == (2,) and got["units"][0].rows == (2,)


def test_weekly_dates_must_share_a_weekday(tmp_home, tmp_path):
    csv = write(tmp_path / "w.csv", "date,sku_id,market,units\n2024-01-05,A,US,1\n2024-01-12,A,US,2\n"
                                    "2024-01-18,A,US,3\n2024-01-26,A,US,4\n")
    mapping = write(tmp_path / "m.yaml", "table: daily_sales\nfrequency: W\ncolumns: {date: date, sku_id: sku_id, "
                                          "market: market, units: units}\n")
    with pytest.raises(DataValidationError) as exc:
        ingest_file("daily_sales", csv, mapping)
    (problem,) = exc.value.problems
    assert problem.column == "date" and problem.rows == (3,) and "Friday" in problem.message


def test_nothing_left_after_filters_is_refused(tmp_home, tmp_path, ship_files):
    mapping = write(tmp_path / "m.yaml", SHIP_MAPPING + "filters: [{column: Block, in: [Z]}]\n")
    with pytest.raises(DataValidationError, match="no rows to write"):
        ingest_file("shipments", ship_files[0], mapping)


def test_references_checked_against_tables_in_store(tmp_home, tmp_path):
    write_table("merchants", pd.DataFrame({"merchant_id": ["M1"]}))
    csv = write(tmp_path / "skus.csv", "sku_id,merchant_id,category,price,launch_date,tier,seasonal,hs_code\n"
                                       "K1,M1,beauty,9.9,2024-01-01,hit,false,330499\n"
                                       "K2,M9,toys,5,2024-01-01,hit,false,950300\n")
    with pytest.raises(DataValidationError) as exc:
        ingest_file("skus", csv)
    (problem,) = exc.value.problems
    assert problem.column == "merchant_id" and problem.rows == (2,) and "merchants" in problem.message
    mapping = write(tmp_path / "m.yaml", "table: skus\ncheck_references: false\ncolumns: {sku_id: sku_id, "
                    "merchant_id: merchant_id, category: category, price: price, launch_date: launch_date, "
                    "tier: tier, seasonal: seasonal, hs_code: hs_code}\n")
    assert ingest_file("skus", csv, mapping).rows == 2


# ---------------------------------------------------------------- mapping file errors


@pytest.mark.parametrize("text,match", [
    ("table: shipments\ncolumns: {weight_kg: {from: g, multipy: 2}}\n", r"columns\.weight_kg\.multipy: unknown key"),
    ("table: shipments\ncolumns: {weight_kg: {from: g, value: 2}}\n", r"columns\.weight_kg: give exactly one source"),
    ("table: shipments\ncolumns: {weight: g}\n", r"columns\.weight: not a column of 'shipments'"),
    ("table: shipments\nfrequency: M\n", r"frequency: Input should be 'D' or 'W'"),
    ("table: shipments\ncolumns: {late: {compare: {left: a, op: '>'}}}\n", r"columns\.late\.compare: give exactly one"),
    ("table: shipments\ncolumns: {mode: {from: m, map: {a: air}, unmapped: drop}}\n", r"columns\.mode\.unmapped"),
    ("table: shipments\nfilters: [{column: a}]\n", r"filters\.0: give exactly one of 'in'"),
    ("table: parcels\n", r"table: unknown table 'parcels'"),
    ("table: orders\n", r"table: the mapping is for 'orders' but --table is 'shipments'"),
    ("table: shipments\nread: {delimiter: ';;'}\n", r"read\.delimiter: must be a single character"),
])
def test_bad_mapping_file_names_file_and_key(tmp_path, text, match):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError, match=match) as exc:
        load_mapping(path, table="shipments")
    assert str(path) in str(exc.value)


# ---------------------------------------------------------------- all or nothing


def test_failed_ingest_leaves_previous_data_byte_identical(tmp_home, ship_files, tmp_path):
    csv, mapping = ship_files
    ingest_file("shipments", csv, mapping)
    before = table_path("shipments").read_bytes()
    bad = write(tmp_path / "bad.csv", SHIP_CSV.replace("Flight", "Zeppelin"))
    with pytest.raises(DataValidationError):
        ingest_file("shipments", bad, mapping)
    assert table_path("shipments").read_bytes() == before
    assert sorted(p.name for p in offline_dir().iterdir()) == ["shipments.parquet"]   # no temp files left


def test_interrupted_write_leaves_previous_data_and_no_temp_file(tmp_home, ship_files, monkeypatch):
    import features.offline as offline

    csv, mapping = ship_files
    ingest_file("shipments", csv, mapping)
    before = table_path("shipments").read_bytes()

    def crash(table, where, **kwargs):
        Path(where).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(offline.pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        ingest_file("shipments", csv, mapping)
    assert table_path("shipments").read_bytes() == before
    assert sorted(p.name for p in offline_dir().iterdir()) == ["shipments.parquet"]


def test_dependent_columns_do_not_repeat_a_missing_source(tmp_home, tmp_path):
    csv = write(tmp_path / "s.csv", "ID\n1\n")
    mapping = write(tmp_path / "m.yaml", """
table: shipments
columns:
  shipment_id: ID
  created_at: {value: "2024-01-01"}
  origin_warehouse: {template: "WH-{Block}"}
  lane: {template: "{origin_warehouse}>{destination_market}"}
  destination_market: {value: DE}
  mode: {value: air}
  carrier: {value: c}
  weight_kg: {value: 1}
""")
    with pytest.raises(DataValidationError) as exc:
        ingest_file("shipments", csv, mapping)
    got = problems_of(exc)
    assert set(got) == {"Block", "destination_market"}   # lane: reported through its causes only
    assert "move 'destination_market' above 'lane'" in got["destination_market"][0].message


def test_parquet_source_with_typed_columns(tmp_home, tmp_path):
    src = pd.DataFrame({"store": [1.0, 2.0], "dept": [3, 4], "when": pd.to_datetime(["2024-01-05", "2024-01-05"]),
                        "sales": [1200.0, 99.0], "price_band": ["x", "UNKNOWN"]})
    path = tmp_path / "sales.parquet"
    src.to_parquet(path)
    mapping = write(tmp_path / "m.yaml", """
table: daily_sales
check_references: false
columns:
  date: {from: when, date_format: "%Y-%m-%d"}
  sku_id: {template: "S{store}-{dept}"}
  market: {value: US}
  units: {from: sales, clip_max: 1000}
  promotion_event: {from: price_band, map: {x: flash_sale}, unmapped: keep}
""")
    ingest_file("daily_sales", path, mapping)
    df = read_table("daily_sales")
    assert list(df["sku_id"]) == ["S1-3", "S2-4"]          # whole floats print without '.0'
    assert list(df["units"]) == [1000.0, 99.0]
    assert list(df["promotion_event"]) == ["flash_sale", "UNKNOWN"]


def test_thousands_separator(tmp_home, tmp_path):
    csv = write(tmp_path / "t.csv", 'id,kg\n1,"1,234.5"\n')
    mapping = write(tmp_path / "m.yaml", """
table: shipments
read: {thousands: ","}
columns:
  shipment_id: id
  created_at: {value: "2024-01-01"}
  origin_warehouse: {value: W}
  destination_market: {value: US}
  lane: {value: W>US}
  mode: {value: air}
  carrier: {value: c}
  weight_kg: kg
""")
    ingest_file("shipments", csv, mapping)
    assert read_table("shipments")["weight_kg"][0] == 1234.5
