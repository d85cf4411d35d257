"""Movie titles for people to read: one reader for the score stage's examples and the report.

Reads MovieLens ``movies.csv`` (UTF-8, ``movieId,title,...``) and ML-100K
``u.item`` (latin-1, ``|``-separated, no header) from any URL Hadoop reads.
Titles only decorate output, so a missing or unreadable file is a warning and
the movies are shown by id.
"""
from __future__ import annotations

import io
import logging
from typing import Any, Optional

import pandas as pd

from cfmodel.errors import InputError

LOG = logging.getLogger(__name__)


def parse_titles(data: bytes, name: str) -> pd.DataFrame:
    """``item_id, title`` from the bytes of a ``movies.csv`` or a ``u.item`` (chosen by ``name``).

    Raises
    ------
    InputError
        The file lacks the columns, or is not in either format.
    """
    try:
        if name.rstrip("/").endswith("u.item"):
            frame = pd.read_csv(io.BytesIO(data), sep="|", header=None, encoding="latin-1", usecols=[0, 1])
            frame.columns = ["item_id", "title"]
        else:
            frame = pd.read_csv(io.BytesIO(data), encoding="utf-8-sig")
            if not {"movieId", "title"} <= set(frame.columns):
                raise InputError(f"{name}: a titles file needs columns movieId and title; found "
                                 f"{list(frame.columns)}")
            frame = frame.rename(columns={"movieId": "item_id"})[["item_id", "title"]]
        ids = pd.to_numeric(frame["item_id"], errors="coerce")
        # Integer ids as MovieLens has them; any other id (a SKU, tt0114709) is kept as text.
        kind = "int64" if ids.notna().all() and (ids % 1 == 0).all() else "str"
        return frame.astype({"item_id": kind, "title": "string"})
    except (ValueError, pd.errors.ParserError) as exc:  # UnicodeDecodeError is a ValueError
        raise InputError(f"{name}: not a movies.csv or u.item titles file ({exc})") from exc


def with_titles(frame: pd.DataFrame, titles: Optional[pd.DataFrame]) -> pd.DataFrame:
    """``frame`` (with ``item_id``) and a ``title`` column joined from ``titles`` (None: no titles); text
    ids meet titles by their text, so a titles file fits string item ids too."""
    if titles is None:
        return frame
    if frame["item_id"].dtype == object or titles["item_id"].dtype == object:
        titles = titles.astype({"item_id": str})
        return frame.assign(_key=frame["item_id"].astype(str)).merge(
            titles.rename(columns={"item_id": "_key"}), on="_key", how="left").drop(columns="_key")
    return frame.merge(titles, on="item_id", how="left")


def read_titles(storage: Any, path: Optional[str]) -> Optional[pd.DataFrame]:
    """``item_id, title`` from ``path`` through ``storage`` (a :class:`cfmodel.storage.Storage`),
    or None (with a warning) when there is no path, no file, or no titles in it."""
    if not path:
        return None
    if not storage.exists(path):
        LOG.warning("titles file %s not found; movies are shown by id", path)
        return None
    try:
        return parse_titles(storage.read_bytes(path), path)
    except InputError as exc:
        LOG.warning("%s; movies are shown by id", exc)
        return None
