"""Input fingerprints (prepare.checksum): content hashed on the executors by line, or the listing."""
import os
import time

import pytest

from cfmodel.storage import Storage, content_sha256, input_fingerprint

LINES = ["userId,movieId,rating,timestamp"] + [f"{u},{i},{(u + i) % 5 + 1}.0,{1000 + u}"
                                               for u in range(40) for i in range(0, 60, 7)]


def _write(path, lines, newline="\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((newline.join(lines) + newline).encode())
    return "file://" + str(path)


def _fp(spark, *urls):
    return content_sha256(spark, Storage(spark), list(urls))


def test_content_fingerprint_follows_content_not_place_or_split(spark, tmp_path):
    a = _write(tmp_path / "a" / "ratings.csv", LINES)
    b = _write(tmp_path / "b" / "ratings.csv", LINES)
    first = _fp(spark, a)
    assert len(first) == 64 and _fp(spark, b) == first  # the same file elsewhere
    # Split into many tiny tasks: the per-file sums do not depend on how Spark splits the input.
    spark.conf.set("spark.sql.files.maxPartitionBytes", "256")
    try:
        assert _fp(spark, a) == first
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    # Rows in another order prepare to the same output, and fingerprint the same.
    assert _fp(spark, _write(tmp_path / "c" / "ratings.csv", [LINES[0]] + LINES[:0:-1])) == first


@pytest.mark.parametrize("change", ["one rating", "a row dropped", "a row doubled", "CRLF", "renamed"])
def test_any_change_changes_the_content_fingerprint(spark, tmp_path, change):
    first = _fp(spark, _write(tmp_path / "a" / "ratings.csv", LINES))
    lines, name, newline = list(LINES), "ratings.csv", "\n"
    if change == "one rating":
        lines[5] = lines[5][:-6] + "9" + lines[5][-5:]
    elif change == "a row dropped":
        del lines[7]
    elif change == "a row doubled":
        lines.append(lines[7])
    elif change == "CRLF":
        newline = "\r\n"
    else:
        name = "ratings2.csv"
    assert _fp(spark, _write(tmp_path / "b" / name, lines, newline)) != first


def test_many_files_and_an_empty_one(spark, tmp_path):
    parts = [_write(tmp_path / "in" / f"part-{k}.csv", LINES[k::3]) for k in range(3)]
    empty = tmp_path / "in" / "part-9.csv"
    empty.write_bytes(b"")
    with_empty = _fp(spark, *parts, "file://" + str(empty))
    assert with_empty != _fp(spark, *parts) and _fp(spark, *reversed(parts)) == _fp(spark, *parts)


def test_listing_fingerprint_reads_nothing_and_follows_size_and_time(spark, tmp_path):
    storage = Storage(spark)
    url = _write(tmp_path / "in" / "ratings.csv", LINES)
    first = input_fingerprint(spark, storage, str(tmp_path / "in"), storage.list_files(str(tmp_path / "in")),
                              "listing")
    assert first.startswith("listing:")
    again = input_fingerprint(spark, storage, str(tmp_path / "in"), storage.list_files(str(tmp_path / "in")),
                              "listing")
    assert again == first
    stamp = time.time() + 60
    os.utime(tmp_path / "in" / "ratings.csv", (stamp, stamp))  # touched: same bytes, new time
    touched = input_fingerprint(spark, storage, url, storage.list_files(url), "listing")
    assert touched != first
