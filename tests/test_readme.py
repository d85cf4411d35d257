"""The README's configuration table states every key of every section with the default the code has."""
import dataclasses
import re
from pathlib import Path

import yaml

from cfmodel.config import Config

README = Path(__file__).resolve().parents[1] / "README.md"
ROW = re.compile(r"^\| (\w+) \| (`[^|]*`) \| ([^|]*) \|")


def _split(cell: str) -> list:
    """Comma-separated values, not splitting inside brackets."""
    parts, depth, current = [], 0, ""
    for ch in cell:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [p.strip().strip("`") for p in parts + [current]]


def _value(text: str):
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-6 as text
        except ValueError:
            return value
    return value


def _flat(obj, prefix: str = "") -> dict:
    """Every leaf key of a config (``train.distributed.processes``) with its value."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        out.update(_flat(value, key + ".") if dataclasses.is_dataclass(value) else {key: value})
    return out


def test_every_key_documented_with_its_default():
    documented = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if not match:
            continue
        section, keys, defaults = match.group(1), re.findall(r"`([\w.]+)`", match.group(2)), _split(match.group(3))
        if len(defaults) == 1:
            defaults = defaults * len(keys)
        assert len(keys) == len(defaults), line
        for key, default in zip(keys, defaults):
            documented[f"{section}.{key}"] = _value(default)
    actual = _flat(Config())
    assert sorted(set(actual) - set(documented)) == [], "keys missing from the README's table"
    assert sorted(set(documented) - set(actual)) == [], "the README documents keys that do not exist"
    wrong = {k: (documented[k], v) for k, v in actual.items() if documented[k] != v}
    assert wrong == {}, "README default != config default"
