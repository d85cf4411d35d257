"""docs/configuration.md states every key of every section with the default the code has."""
import dataclasses
import re
from pathlib import Path

import yaml

from cfmodel.config import Config

ROOT = Path(__file__).resolve().parents[1]
CONFIGURATION = ROOT / "docs" / "configuration.md"
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
    for line in CONFIGURATION.read_text(encoding="utf-8").splitlines():
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
    assert sorted(set(actual) - set(documented)) == [], "keys missing from docs/configuration.md"
    assert sorted(set(documented) - set(actual)) == [], "docs/configuration.md documents keys that do not exist"
    wrong = {k: (documented[k], v) for k, v in actual.items() if documented[k] != v}
    assert wrong == {}, "docs/configuration.md default != config default"


def _keys_under(heading: str) -> set:
    """The dotted keys of the table rows under ``## heading`` in docs/configuration.md."""
    text = CONFIGURATION.read_text(encoding="utf-8").split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    keys = set()
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            keys |= {f"{match.group(1)}.{k}" for k in re.findall(r"`([\w.]+)`", match.group(2))}
    return keys


def test_the_keys_you_set_are_the_ones_help_lists_and_the_rest_are_advanced():
    """docs and ``--help`` split the keys alike. Broken version caught: a key added to one list only."""
    from cfmodel.config import USER_KEYS

    assert _keys_under("The keys you set") == set(USER_KEYS)
    assert _keys_under("Advanced keys") == set(_flat(Config())) - set(USER_KEYS)


def test_the_id_api_docstring_examples_run():
    """The examples in ``cfmodel.model.by_id``'s docstring are run, so they cannot drift from the code."""
    import doctest

    import cfmodel.model.by_id as by_id

    result = doctest.testmod(by_id)
    assert result.attempted >= 5 and result.failed == 0
