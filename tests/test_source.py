"""Reading raw files: formats, line endings, BOM, and the errors for unusable input."""
import pandas as pd
import pytest

from cfmodel.errors import InputError
from cfmodel.ingest.source import ColumnSpec, read_ratings, resolve_format

SPEC = ColumnSpec("userId", "movieId", "rating", "timestamp")


def _rows(raw):
    return sorted((r["user"], r["item"], r["rating"], r["timestamp"], r["_corrupt_record"])
                  for r in raw.frame.collect())


def _write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def test_bom_mixed_line_endings_and_trailing_blank_line(spark, tmp_path):
    path = _write(tmp_path, "ratings.csv",
                  b"\xef\xbb\xbfuserId,movieId,rating,timestamp\r\n1,10,4.0,100\r\n2,20,3.5,200\n3,30,5.0,300\r\n\r\n")
    raw = read_ratings(spark, path, SPEC)
    assert raw.input_format == "csv"
    # Trailing \r, if any reached a value, is stripped by the cleaning rules; here values are exact.
    got = [(u, i, r.strip(), t.strip(), c) for u, i, r, t, c in _rows(raw)]
    assert got == [("1", "10", "4.0", "100", None), ("2", "20", "3.5", "200", None), ("3", "30", "5.0", "300", None)]


def test_extra_columns_are_ignored_and_reported(spark, tmp_path):
    path = _write(tmp_path, "r.csv", b"userId,movieId,rating,timestamp,tag\n1,10,4.0,100,x\n")
    raw = read_ratings(spark, path, SPEC)
    assert raw.extra_columns == ["tag"]
    assert raw.frame.columns[:4] == ["user", "item", "rating", "timestamp"]


def test_rows_with_wrong_field_count_are_flagged(spark, tmp_path):
    path = _write(tmp_path, "r.csv", b"userId,movieId,rating,timestamp\n1,10,4.0,100\n1,11,4.0,100,9\n1,12\n")
    corrupt = [r[4] for r in _rows(read_ratings(spark, path, SPEC))]
    assert sorted(c for c in corrupt if c) == ["1,11,4.0,100,9", "1,12"]


def test_source_file_is_recorded(spark, tmp_path):
    path = _write(tmp_path, "r.csv", b"userId,movieId,rating,timestamp\n1,10,4.0,100\n")
    src = read_ratings(spark, path, SPEC).frame.first()["_source_file"]
    assert src.endswith("/r.csv")


def test_missing_column_names_file_and_columns(spark, tmp_path):
    path = _write(tmp_path, "r.csv", b"userId,movieId,timestamp\n1,10,100\n")
    with pytest.raises(InputError, match=r"r\.csv: required column\(s\) \['rating'\] not found"):
        read_ratings(spark, path, SPEC)


def test_wrong_delimiter_gets_a_hint(spark, tmp_path):
    path = _write(tmp_path, "r.csv", b"userId;movieId;rating;timestamp\n1;10;4.0;100\n")
    with pytest.raises(InputError, match="delimiter"):
        read_ratings(spark, path, SPEC)


def test_empty_file_and_missing_path(spark, tmp_path):
    with pytest.raises(InputError, match="input is empty"):
        read_ratings(spark, _write(tmp_path, "empty.csv", b""), SPEC)
    with pytest.raises(InputError, match="input not found"):
        read_ratings(spark, str(tmp_path / "nope.csv"), SPEC)


def test_tsv_without_header(spark, tmp_path):
    path = _write(tmp_path, "u.data", b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    raw = read_ratings(spark, path, SPEC)
    assert raw.input_format == "tsv"
    assert _rows(raw) == [("186", "302", "3", "891717742", None), ("196", "242", "3", "881250949", None)]


def test_parquet_with_typed_columns(spark, tmp_path):
    path = str(tmp_path / "in.parquet")
    pd.DataFrame({"u": [1, 2], "i": [5, 6], "r": [4.5, 1.0]}).to_parquet(path)
    raw = read_ratings(spark, path, ColumnSpec("u", "i", "r", None))
    assert raw.input_format == "parquet"
    assert _rows(raw) == [("1", "5", "4.5", None, None), ("2", "6", "1.0", None, None)]


def test_directory_of_csv_parts(spark, tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    for k in range(2):
        (d / f"part-{k}.csv").write_bytes(b"userId,movieId,rating,timestamp\n%d,1,4.0,1\n" % (k + 1))
    (d / "_SUCCESS").write_bytes(b"")
    raw = read_ratings(spark, str(d), SPEC)
    assert len(raw.files) == 2
    assert [r[0] for r in _rows(raw)] == ["1", "2"]


def test_unknown_extension_needs_format(tmp_path):
    with pytest.raises(InputError, match="input_format"):
        resolve_format("x.xlsx", ["file:/x.xlsx"], "auto")
    assert resolve_format("x.xlsx", ["file:/x.xlsx"], "csv") == "csv"


def test_a_large_file_is_read_in_several_splits_a_core(spark, tmp_path):
    from cfmodel.ingest.source import MIN_SPLITS, SPLITS_PER_CORE
    # 9 MB: one split under Spark's default; 4 splits a core (never under 4 MB each) make it 3.
    path = _write(tmp_path, "big.csv", b"userId,movieId,rating,timestamp\n" + b"1,10,4.0,1000000000\n" * 450_000)
    spark.conf.unset(MIN_SPLITS)
    try:
        raw = read_ratings(spark, path, SPEC)
        assert spark.conf.get(MIN_SPLITS) == str(SPLITS_PER_CORE * spark.sparkContext.defaultParallelism)
        assert raw.frame.rdd.getNumPartitions() == 3
        spark.conf.set(MIN_SPLITS, "1")  # a value the job's config sets wins
        raw = read_ratings(spark, path, SPEC)
        assert spark.conf.get(MIN_SPLITS) == "1" and raw.frame.rdd.getNumPartitions() == 1
    finally:
        spark.conf.unset(MIN_SPLITS)
