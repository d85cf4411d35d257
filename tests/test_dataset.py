"""The prepared dataset object: one place that reads a prepare output, and refuses an unfinished one."""
import shutil

import pytest

from cfmodel.dataset import PreparedData
from cfmodel.errors import InputError


def test_a_prepare_output_reads_its_meta_parts_and_types(prepared_dir):
    data = PreparedData(prepared_dir + "/")
    assert data.path == prepared_dir and data.part("train") == f"{prepared_dir}/train"
    assert (data.feedback, data.id_types) == ("explicit", ("int", "int"))
    assert data.n_users == data.meta["n_users"] > 0 and data.counts["train_rows"] > 0
    assert data.scale["min"] == 0.5 and data.scale["max"] == 5.0
    with pytest.raises(ValueError, match="no part 'ratings'"):
        data.part("ratings")


@pytest.mark.fault(fault='a prepare output without _SUCCESS (unfinished) or foreign',
                   exit='2',
                   survives='-',
                   rerun='prepare again')
def test_an_unfinished_or_foreign_directory_is_a_one_line_error_naming_it(prepared_dir, tmp_path):
    """Broken version caught: a reader trusting a directory that exists (an object store's half-copied
    output), or a deep KeyError on a directory that is not a prepare output."""
    copy = tmp_path / "prepared"
    shutil.copytree(prepared_dir, copy)
    (copy / "_SUCCESS").unlink()
    with pytest.raises(InputError, match=f"{copy}: no _SUCCESS; the prepare output is incomplete"):
        PreparedData(str(copy)).meta
    with pytest.raises(InputError, match=f"{tmp_path}: no meta.json; is this a prepare job's output"):
        PreparedData(str(tmp_path)).n_users


@pytest.mark.fault(fault='a prepare output of another format version',
                   exit='2',
                   survives='-',
                   rerun='prepare again')
def test_a_prepare_output_of_another_version_is_a_one_line_error(prepared_dir, tmp_path):
    """A newer format, or a meta.json without what a prepare output holds: refused, naming the path, never a
    KeyError deep in a stage."""
    import json

    for name, change in (("newer", {"format_version": 2}), ("foreign", {"n_users": None})):
        copy = tmp_path / name
        shutil.copytree(prepared_dir, copy)
        meta = json.loads((copy / "meta.json").read_text())
        meta.update(change)
        meta = {k: v for k, v in meta.items() if v is not None}
        (copy / "meta.json").write_text(json.dumps(meta))
        with pytest.raises(InputError, match=f"{copy}: a prepare output this version cannot read") as err:
            PreparedData(str(copy)).meta
        assert len(str(err.value).splitlines()) == 1
