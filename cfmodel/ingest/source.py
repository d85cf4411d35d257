"""Reading raw ratings: MovieLens CSV, ``u.data``-style TSV, or Parquet.

Everything is read as text, so that a bad value becomes a quarantined row with a
reason rather than a silent null. The frame that comes out has the canonical
columns ``user, item, rating, timestamp`` (strings), ``_source_file`` and
``_corrupt_record`` (the raw line of a row with the wrong number of fields).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import List, Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cfmodel.errors import InputError
from cfmodel.storage import Storage

LOG = logging.getLogger(__name__)

# Input splits a core: Spark's default (one a core, none over 128 MB) cuts a 557 MB file into 5 splits, so
# on 2 cores the last wave runs on one core; 4 a core keeps every core busy to the end of the read. Splits
# never go under spark.sql.files.openCostInBytes (4 MB), so small inputs stay in one.
SPLITS_PER_CORE = 4
MIN_SPLITS = "spark.sql.files.minPartitionNum"

CANONICAL = ("user", "item", "rating", "timestamp")
CORRUPT = "_corrupt_record"
SOURCE = "_source_file"


@dataclass(frozen=True)
class ColumnSpec:
    """The input's names for the canonical columns (``timestamp`` may be absent).

    ``feedback`` says what the ``rating`` column holds: ``explicit`` ratings (the ``rating`` name),
    ``implicit`` events (the ``weight`` name, summed per pair, or none: each event counts 1), or
    ``auto``: implicit when ``rating`` is None or the input has no such column (:meth:`resolved`).
    """

    user: str
    item: str
    rating: Optional[str]
    timestamp: Optional[str]
    weight: Optional[str] = None
    feedback: str = "explicit"

    def resolved(self, present: Optional[List[str]]) -> "ColumnSpec":
        """This spec with ``auto`` feedback decided from the input's columns (None: a headerless TSV)."""
        if self.feedback != "auto":
            return self
        absent = self.rating is None or (present is not None and self.rating not in present)
        return dataclasses.replace(self, feedback="implicit" if absent else "explicit")

    @property
    def value(self) -> Optional[str]:
        """The input column read as ``rating``: the rating, or for events the weight (None: counted)."""
        return self.weight if self.feedback == "implicit" else self.rating

    def pairs(self) -> List[tuple]:
        """(canonical, input name) for each configured column."""
        named = zip(CANONICAL, (self.user, self.item, self.value, self.timestamp))
        return [(canon, name) for canon, name in named if name]


@dataclass
class RawRatings:
    """Raw ratings as text plus what was learnt about the input."""

    frame: DataFrame
    files: List[str]
    input_format: str
    extra_columns: List[str]
    feedback: str = "explicit"


def resolve_format(path: str, files: List[str], input_format: str) -> str:
    """The format to read ``path`` as; ``auto`` looks at the file extensions."""
    if input_format != "auto":
        return input_format
    names = [f.lower() for f in files] or [path.lower()]
    for fmt, exts in (("parquet", (".parquet", ".parq")), ("csv", (".csv",)), ("tsv", (".tsv", ".data"))):
        if all(n.endswith(exts) for n in names):
            return fmt
    raise InputError(f"{path}: cannot tell the input format from the file names; "
                     f"set prepare.input_format to csv, tsv or parquet")


def _require_columns(path: str, present: List[str], spec: ColumnSpec) -> List[str]:
    missing = [name for _, name in spec.pairs() if name not in present]
    if missing:
        hint = ""
        if len(present) == 1 and any(d in present[0] for d in ("\t", ";", "|", ",")):
            hint = " (the header reads as one column: is the delimiter right?)"
        raise InputError(f"{path}: required column(s) {missing} not found; columns present: {present}{hint}")
    wanted = {name for _, name in spec.pairs()}
    return [c for c in present if c not in wanted]


def _read_text_table(spark: SparkSession, path: str, names: List[str], header: bool, sep: str) -> DataFrame:
    schema = T.StructType([T.StructField(n, T.StringType()) for n in names] +
                          [T.StructField(CORRUPT, T.StringType())])
    return (spark.read.schema(schema)
            .option("header", header).option("sep", sep).option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT).option("enforceSchema", True)
            .csv(path))


def read_ratings(spark: SparkSession, path: str, spec: ColumnSpec, input_format: str = "auto") -> RawRatings:
    """Read raw ratings from a file or directory at ``path``.

    Parameters
    ----------
    path
        File or directory, as a URL or a path on Spark's default file system.
    spec
        The input's column names. TSV files have no header: their fields are
        user, item, rating and (when configured) timestamp, in that order.
    input_format
        ``auto``, ``csv``, ``tsv`` or ``parquet``.

    Raises
    ------
    InputError
        The path does not exist, holds no data, or lacks a required column.
    """
    storage = Storage(spark)
    if not storage.exists(path):
        raise InputError(f"input not found: {path}")
    files = storage.list_files(path)
    if not files or all(storage.size(f) == 0 for f in files):
        raise InputError(f"input is empty: {path}")
    fmt = resolve_format(path, files, input_format)
    if spark.conf.get(MIN_SPLITS, None) is None:  # a value the job's config sets wins
        spark.conf.set(MIN_SPLITS, str(SPLITS_PER_CORE * spark.sparkContext.defaultParallelism))

    extra: List[str] = []
    if fmt == "parquet":
        frame = spark.read.parquet(path)
        spec = spec.resolved(frame.columns)
        extra = _require_columns(path, frame.columns, spec)
        frame = frame.withColumn(CORRUPT, F.lit(None).cast("string"))
    elif fmt == "csv":
        # Spark strips a UTF-8 byte-order mark and accepts CRLF, LF and mixed endings.
        header = [c.strip() for c in spark.read.option("header", True).csv(path).columns]
        if not header:
            raise InputError(f"input is empty: {path}")
        spec = spec.resolved(header)
        extra = _require_columns(path, header, spec)
        frame = _read_text_table(spark, path, header, header=True, sep=",")
    elif fmt == "tsv":
        spec = spec.resolved(None)
        names = [name for _, name in spec.pairs()]
        frame = _read_text_table(spark, path, names, header=False, sep="\t")
    else:
        raise InputError(f"unknown input format {fmt!r} for {path}")
    if extra:
        LOG.info("%s: ignoring extra columns %s", path, extra)

    if spec.feedback == "implicit":
        LOG.info("%s: implicit feedback (events): each (user, item) pair counts its events%s", path,
                 f", weighted by {spec.weight}" if spec.weight else "")
    named = dict(spec.pairs())
    cols = [F.col(f"`{named[canon]}`").cast("string").alias(canon) if canon in named
            else F.lit(None).cast("string").alias(canon) for canon in CANONICAL]
    frame = frame.select(*cols, F.col(CORRUPT), F.input_file_name().alias(SOURCE))
    return RawRatings(frame=frame, files=files, input_format=fmt, extra_columns=extra, feedback=spec.feedback)
