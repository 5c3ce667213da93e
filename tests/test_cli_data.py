"""`tradecast data ingest`: success prints a summary; bad input exits 2 listing every problem."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tradecast.cli import app
from tradecast.paths import table_path

runner = CliRunner()

GOOD = "date,sku_id,market,units\n2024-01-01,A,US,3\n2024-01-02,A,US,4\n"


def ingest(*args: str):
    return runner.invoke(app, ["data", "ingest", *args])


def test_ingest_ok(tmp_home, tmp_path: Path):
    csv = tmp_path / "sales.csv"
    csv.write_text(GOOD)
    result = ingest("--table", "daily_sales", "--source", str(csv))
    assert result.exit_code == 0, result.output
    assert "daily_sales: wrote 2 row(s)" in result.output
    assert table_path("daily_sales").exists()


def test_ingest_bad_data_exits_2_with_every_problem(tmp_home, tmp_path: Path):
    csv = tmp_path / "sales.csv"
    csv.write_text(GOOD)
    assert ingest("--table", "daily_sales", "--source", str(csv)).exit_code == 0
    before = table_path("daily_sales").read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text("date,sku_id,market,units,[extra]\n2024-01-01,A,XX,-1,1\nnope,A,US,2,1\n")
    result = ingest("--table", "daily_sales", "--source", str(bad))
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "daily_sales: 4 problem(s) found, nothing was written" in out
    assert "column '[extra]': not a column" in out                  # user text is not eaten as markup
    assert "column 'market'" in out and "XX" in out and "rows 1" in out
    assert "column 'units'" in out and "below the minimum" in out
    assert "column 'date'" in out and "rows 2" in out
    assert "Traceback" not in result.output
    assert table_path("daily_sales").read_bytes() == before


def test_ingest_bad_mapping_and_missing_file_exit_2(tmp_home, tmp_path: Path):
    csv = tmp_path / "sales.csv"
    csv.write_text(GOOD)
    mapping = tmp_path / "m.yaml"
    mapping.write_text("table: daily_sales\ncolumns: {units: {from: units, scale: 2}}\n")
    result = ingest("--table", "daily_sales", "--source", str(csv), "--mapping", str(mapping))
    assert result.exit_code == 2 and "columns.units.scale: unknown key" in result.output
    result = ingest("--table", "daily_sales", "--source", str(tmp_path / "nope.csv"))
    assert result.exit_code == 2 and "file not found" in result.output
    result = ingest("--table", "sales", "--source", str(csv))
    assert result.exit_code == 2 and "unknown table 'sales'" in result.output


def test_ingest_help_lists_options():
    result = runner.invoke(app, ["data", "ingest", "--help"])
    assert result.exit_code == 0
    for option in ("--table", "--source", "--mapping"):
        assert option in result.output
