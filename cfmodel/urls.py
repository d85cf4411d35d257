"""URLs for pyarrow's file systems (and Petastorm's), with no Spark or torch import: used by the
train loaders and inside Spark tasks (the content checksum)."""
from __future__ import annotations

import os
from urllib.parse import urlparse


def to_url(path: str) -> str:
    """A URL Petastorm accepts: local paths become ``file:///abs/path``."""
    parsed = urlparse(path)
    if parsed.scheme and parsed.scheme != "file":
        return path
    local = parsed.path if parsed.scheme == "file" else path
    return "file://" + os.path.abspath(local)


def read_json_file(path: str) -> dict:
    """A JSON file at a local path or any URL pyarrow reads; FileNotFoundError when there is none."""
    import json

    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(to_url(path))
    with filesystem.open_input_stream(inner) as stream:
        return json.loads(stream.read().decode("utf-8"))


def exists(path: str) -> bool:
    """Whether a file or directory exists at a local path or any URL pyarrow reads."""
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(to_url(path))
    return filesystem.get_file_info(inner).type != fs.FileType.NotFound
