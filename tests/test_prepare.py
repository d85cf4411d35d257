"""The prepare stage as a whole: counts reconcile, gates, determinism, atomic writes."""
import json

import pandas as pd
import pytest

from cfmodel.config import PrepareConfig
from cfmodel.errors import InputError, OutputExistsError, QualityGateError
from cfmodel.prepare.transforms import prepare_ratings, write_prepared
from cfmodel.storage import LocalStorage, Storage, atomic_output, remove_stale_temporaries


# The 0.5..5 star scale named, not inferred: these tests plant ratings outside it to be quarantined.
STARS = dict(rating_min=0.5, rating_max=5.0, rating_step=0.5)


def _good_rows(n_users=30, n_items=12):
    return [(str(u), str(100 + i), str(((u * i) % 9 + 1) / 2), str(1000 + u + i))
            for u in range(1, n_users + 1) for i in range(n_items) if (u + 2 * i) % 3 != 0]


def _messy(raw_frame):
    rows = _good_rows()
    rows += [rows[0], rows[1]]                      # exact duplicates
    rows += [("1", "100", "1.0", "99999")]          # same pair, later: wins over the original
    rows += [("0", "5", "3", "1"), ("x", "5", "3", "1"), ("2", "5", "7", "1"), ("2", "5", "NaN", "1"),
             ("2", "5", "3", "1", "2,5,3,1,1")]
    rows += [("999", "100", "4.0", "5")]            # user with a single rating
    return raw_frame(rows), len(rows)


def test_counts_reconcile_and_outputs_are_consistent(raw_frame):
    raw, n = _messy(raw_frame)
    cfg = PrepareConfig(min_user_ratings=2, max_quarantine_fraction=0.5, valid_fraction=0.25, seed=3, **STARS)
    p = prepare_ratings(raw, cfg)
    c = p.counts
    assert c["input_rows"] == n
    assert c["quarantined"] == 5
    assert c["quarantined_by_reason"] == {"bad_rating": 1, "bad_user_id": 2, "malformed_row": 1,
                                          "rating_out_of_range": 1}
    assert c["duplicates_dropped"] == 3
    assert c["removed_min_user"] == 1
    assert c["reconciled"] is True
    assert c["train_rows"] == p.train.count() and c["valid_rows"] == p.valid.count()
    assert c["train_rows"] + c["valid_rows"] + 5 + 3 + 1 == n
    assert 0.15 < c["valid_rows"] / (c["train_rows"] + c["valid_rows"]) < 0.35
    latest = p.train.union(p.valid).where("user_id = 1 and item_id = 100").collect()
    assert [r.rating for r in latest] == [1.0]
    assert p.quarantine.count() == 5
    # Every index is contiguous and every validation user and item has training rows (policy: train).
    assert sorted(r.user_idx for r in p.users.collect()) == list(range(c["n_users"]))
    assert p.valid.join(p.train.select("user_idx").distinct(), "user_idx", "left_anti").count() == 0
    assert p.valid.join(p.train.select("item_idx").distinct(), "item_idx", "left_anti").count() == 0
    assert dict(p.train.dtypes)["rating"] == "float" and dict(p.train.dtypes)["user_idx"] == "int"


def test_quarantine_gate_names_reasons_and_file(raw_frame):
    raw = raw_frame([("1", "1", "3", "1"), ("1", "2", "bad", "1"), ("1", "3", "9", "1")], source="file:/in/r.csv")
    with pytest.raises(QualityGateError, match=r"quarantined 2 of 3 rows .*bad_rating=1.*file:/in/r.csv"):
        prepare_ratings(raw, PrepareConfig(**STARS))


def test_header_only_input_is_an_error(raw_frame):
    with pytest.raises(InputError, match="no data rows"):
        prepare_ratings(raw_frame([]), PrepareConfig())


def test_same_result_whatever_the_partitioning(raw_frame):
    raw, _ = _messy(raw_frame)
    cfg = PrepareConfig(max_quarantine_fraction=0.5, **STARS)
    a = prepare_ratings(raw.repartition(1), cfg)
    b = prepare_ratings(raw.repartition(6), cfg)
    for name in ("train", "valid", "users", "items"):
        assert sorted(getattr(a, name).collect()) == sorted(getattr(b, name).collect()), name
    assert a.counts == b.counts


def test_write_is_atomic_and_refuses_to_overwrite(spark, raw_frame, tmp_path):
    raw, _ = _messy(raw_frame)
    cfg = PrepareConfig(max_quarantine_fraction=0.5, **STARS)
    p = prepare_ratings(raw, cfg)
    storage = Storage(spark)
    out = str(tmp_path / "prepared")
    with atomic_output(storage, out, overwrite=False) as tmp:
        write_prepared(p, tmp, cfg)
    assert (tmp_path / "prepared" / "_SUCCESS").exists()
    train = pd.read_parquet(tmp_path / "prepared" / "train")
    assert list(train.columns) == ["user_idx", "item_idx", "rating", "user_id", "item_id", "timestamp"]
    assert str(train.dtypes["user_idx"]) == "int32" and str(train.dtypes["rating"]) == "float32"
    assert len(train) == p.counts["train_rows"]
    quarantine = pd.read_parquet(tmp_path / "prepared" / "quarantine")
    assert list(quarantine.columns) == ["userId", "movieId", "rating", "timestamp", "raw_line", "_source_file",
                                        "reason"]
    # The written quarantine holds every row the counts say it does, reason by reason (mutant caught: a
    # writer that drops rows, which the reconciled counts alone would not notice).
    assert quarantine["reason"].value_counts().to_dict() == p.counts["quarantined_by_reason"]
    assert len(quarantine) == p.counts["quarantined"] > 0

    with pytest.raises(OutputExistsError, match="--overwrite"):
        with atomic_output(storage, out, overwrite=False):
            pytest.fail("must not start writing")

    # A failure half-way leaves the previous output untouched and no temporary directory.
    with pytest.raises(RuntimeError):
        with atomic_output(storage, out, overwrite=True) as tmp:
            storage.write_json(f"{tmp}/partial.json", {"half": True})
            raise RuntimeError("crash")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["prepared"]
    assert not (tmp_path / "prepared" / "partial.json").exists()

    with atomic_output(storage, out, overwrite=True) as tmp:
        storage.write_json(f"{tmp}/new.json", {"v": 1})
    assert json.loads((tmp_path / "prepared" / "new.json").read_text()) == {"v": 1}
    assert not (tmp_path / "prepared" / "train").exists()


@pytest.mark.parametrize("kind", ["hadoop", "local"])
def test_a_crashed_attempts_temporaries_are_removed_by_the_next(spark, tmp_path, kind):
    """kill -9 leaves ``<output>.tmp-<hex>/`` behind (no error handler runs); the next attempt removes it,
    and leaves alone what only looks alike (another output's temporaries, the train checkpoints)."""
    storage = Storage(spark) if kind == "hadoop" else LocalStorage()
    for name in ("prepared.tmp-0a1b2c3d4e5f", "prepared.tmp-ffffffffffff", "other.tmp-0a1b2c3d4e5f",
                 "prepared.checkpoints"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "part-0.parquet").write_bytes(b"half")
    with atomic_output(storage, str(tmp_path / "prepared"), overwrite=False) as tmp:
        storage.write_text(f"{tmp}/done.txt", "yes")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.tmp-0a1b2c3d4e5f", "prepared",
                                                          "prepared.checkpoints"]
    assert (tmp_path / "prepared" / "done.txt").read_text() == "yes"
    assert remove_stale_temporaries(storage, str(tmp_path / "prepared")) == []


def test_clean_input_counts_and_an_empty_quarantine_without_a_second_read(raw_frame):
    from cfmodel.ingest.clean import clean_input
    rows = _good_rows()
    clean = clean_input(raw_frame(rows + [rows[0]]), PrepareConfig(**STARS))
    counts = (clean.n_input, clean.n_good, clean.n_pairs, clean.by_reason)
    assert counts == (len(rows) + 1, len(rows) + 1, len(rows), {})
    assert clean.ratings.count() == len(rows)
    assert abs(clean.approx_users - 30) <= 2 and abs(clean.approx_items - 12) <= 1  # HyperLogLog estimates
    # No bad row: the quarantine is an empty frame of the same schema, not a plan that reads the input again.
    assert "RLIKE" not in clean.quarantine._jdf.queryExecution().executedPlan().toString()
    assert clean.quarantine.count() == 0 and clean.quarantine.columns == ["user", "item", "rating", "timestamp",
                                                                          "raw_line", "_source_file", "reason"]
    clean.cached.unpersist()
