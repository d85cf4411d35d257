"""Input fingerprints (prepare.checksum): each file's SHA-256 streamed in chunks on the executors, or the listing."""
import hashlib
import os
import time

import pytest

from cfmodel.errors import InputError
from cfmodel.storage import Storage, content_sha256, input_fingerprint


def _expected(*files):
    """The fingerprint by hand: hashlib over each file's bytes, sorted ``name:digest`` lines."""
    lines = sorted(f"{f.name}:{hashlib.sha256(f.read_bytes()).hexdigest()}\n" for f in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def test_a_file_larger_than_the_chunk_hashes_as_hashlib_does(spark, tmp_path):
    big = tmp_path / "ratings.csv"
    big.write_bytes(os.urandom(3 * 65536 + 123))  # three chunks and a bit
    assert content_sha256(spark, ["file://" + str(big)], chunk_bytes=65536) == _expected(big)
    # Hadoop's way of writing a local URL, as Storage.list_files returns it.
    assert content_sha256(spark, ["file:" + str(big)], chunk_bytes=65536) == _expected(big)


def test_several_files_and_an_empty_one_in_any_order(spark, tmp_path):
    files = []
    for k, size in enumerate([1000, 200_000, 0]):
        f = tmp_path / f"part-{k}.csv"
        f.write_bytes(os.urandom(size))
        files.append(f)
    urls = ["file://" + str(f) for f in files]
    assert content_sha256(spark, urls, chunk_bytes=4096) == _expected(*files)
    assert content_sha256(spark, urls[::-1], chunk_bytes=4096) == _expected(*files)
    files[1].write_bytes(files[1].read_bytes()[:-1] + b"!")  # one byte changed
    assert content_sha256(spark, urls, chunk_bytes=4096) == _expected(*files)


def test_an_unreadable_file_is_a_clear_error(spark, tmp_path):
    # Raised in a Spark task, it reaches the driver as the same one-line InputError (exit 2 in a job).
    with pytest.raises(InputError, match="^file://.*nope.csv: cannot read it to fingerprint its content.*checksum: listing"):
        content_sha256(spark, ["file://" + str(tmp_path / "nope.csv")])


def test_listing_fingerprint_reads_nothing_and_follows_size_and_time(spark, tmp_path):
    storage = Storage(spark)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "ratings.csv").write_text("userId,movieId,rating\n1,2,3.0\n")
    files = storage.list_files(str(folder))

    def fp():
        return input_fingerprint(spark, storage, str(folder), files, "listing")

    first = fp()
    assert first.startswith("listing:") and fp() == first
    stamp = time.time() + 60
    os.utime(folder / "ratings.csv", (stamp, stamp))  # touched: same bytes, new time
    assert fp() != first
    (folder / "ratings.csv").write_text("userId,movieId,rating\n1,2,4.0\n1,3,3.0\n")
    assert fp() != first
    assert input_fingerprint(spark, storage, str(folder), files, "content") == _expected(folder / "ratings.csv")
