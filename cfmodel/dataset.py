"""A prepare output as one object: its splits, id maps, rating scale and ``meta.json``, read in one place.

Every stage that reads prepared data (train, tune, score, evaluate, fold-in, the pipeline's reuse) goes
through :class:`PreparedData`, as every stage reads a model through
:class:`cfmodel.model.TrainedModel`. It refuses a directory that is not a finished prepare output (no
``_SUCCESS``, the commit point written last) with a one-line error naming the path, so a half-copied output
on an object store is never read as data.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Tuple

from cfmodel.errors import InputError
from cfmodel.urls import exists, read_json_file

SPLITS = ("train", "valid")
PARTS = SPLITS + ("users", "items", "quarantine")
SUCCESS = "_SUCCESS"
# The layout of a prepare output this version writes and reads; outputs older than the field are format 1.
PREPARED_FORMAT = 1
REQUIRED = ("n_users", "n_items", "counts", "input")


class PreparedData:
    """The prepare output at ``path`` (a local path or a URL).

    ``storage`` (a :class:`cfmodel.storage.Storage`, Hadoop's file systems through Spark) reads the metadata
    in a Spark job; without it pyarrow's file systems do, so the train stage needs no Spark. :meth:`frame`
    reads a part as a Spark DataFrame. The metadata is read once, on first use, after checking that the
    output is complete.
    """

    def __init__(self, path: str, storage: Any = None) -> None:
        self.path, self.storage = path.rstrip("/"), storage

    def _read_json(self, path: str) -> Dict[str, Any]:
        if self.storage is None:
            return read_json_file(path)
        if not self.storage.exists(path):
            raise FileNotFoundError(path)
        return self.storage.read_json(path)

    def _exists(self, path: str) -> bool:
        return exists(path) if self.storage is None else self.storage.exists(path)

    def __repr__(self) -> str:
        return f"PreparedData({self.path!r})"

    def part(self, name: str) -> str:
        """The path of one part: ``train``, ``valid``, ``users``, ``items`` or ``quarantine``."""
        if name not in PARTS:
            raise ValueError(f"a prepare output has no part {name!r}; parts: {PARTS}")
        return f"{self.path}/{name}"

    @functools.cached_property
    def meta(self) -> Dict[str, Any]:
        """``meta.json``; an :class:`InputError` when the directory is not a finished prepare output."""
        try:
            meta = self._read_json(f"{self.path}/meta.json")
        except FileNotFoundError as exc:
            raise InputError(f"{self.path}: no meta.json; is this a prepare job's output?") from exc
        if not self._exists(f"{self.path}/{SUCCESS}"):
            raise InputError(f"{self.path}: no {SUCCESS}; the prepare output is incomplete (a crashed or "
                             f"unfinished write): rerun prepare")
        found = meta.get("format_version", 1)
        missing = [k for k in REQUIRED if k not in meta]
        if not isinstance(found, int) or found > PREPARED_FORMAT or missing:
            what = f"format {found}" if not missing else f"no {', '.join(missing)} in its meta.json"
            raise InputError(f"{self.path}: a prepare output this version cannot read ({what}; it reads format "
                             f"{PREPARED_FORMAT}): rerun prepare with this version")
        return meta

    @property
    def feedback(self) -> str:
        """``explicit`` (ratings) or ``implicit`` (event counts); outputs older than the field are ratings."""
        return self.meta.get("feedback", "explicit")

    @property
    def id_types(self) -> Tuple[str, str]:
        """(user, item) id types: ``int``, ``long`` or ``string`` (``int`` for outputs older than the field)."""
        types = self.meta.get("id_types") or {}
        return types.get("user", "int"), types.get("item", "int")

    @property
    def scale(self) -> Dict[str, Any]:
        """The rating scale read or inferred in prepare: ``min``, ``max``, ``step`` (empty for events)."""
        return self.meta.get("rating") or {}

    @property
    def rating_range(self) -> Tuple[float, float]:
        """(lowest, highest) rating of the prepared scale; 0.5..5 for outputs older than the field, which
        all held MovieLens stars."""
        return float(self.scale.get("min", 0.5)), float(self.scale.get("max", 5.0))

    @property
    def counts(self) -> Dict[str, Any]:
        return self.meta["counts"]

    @property
    def n_users(self) -> int:
        return int(self.meta["n_users"])

    @property
    def n_items(self) -> int:
        return int(self.meta["n_items"])

    @property
    def input_sha256(self) -> str:
        """The fingerprint of the input it was prepared from (a model records it: its indices match these)."""
        return self.meta["input"]["sha256"]

    def frame(self, spark: Any, name: str):
        """One part as a Spark DataFrame (after checking the output is complete)."""
        _ = self.meta  # the completeness check
        return spark.read.parquet(self.part(name))
