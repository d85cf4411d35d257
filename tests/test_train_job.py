"""cf-train end to end, in process (it is a driver-side step, not a Spark job)."""
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from cfmodel.model import TrainedModel
from cfmodel.train import main

pytestmark = pytest.mark.slow  # end to end: left out of make test-fast


def _args(prepared_dir, out, *extra):
    return ["--set", f"train.data={prepared_dir}", "--set", f"train.output={out}", "--set", "train.n_factors=6",
            "--set", "train.epochs=2", "--set", "train.progress=false", "--set", "train.loader=petastorm",
            "--set", "train.batch_size=512", "--set", "train.schedule=constant", "--set", "train.wd_epoch_steps=19",
            *extra]


def test_cf_train_writes_factors_model_and_metrics(prepared_dir, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(_args(prepared_dir, out)) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["loader"] == "petastorm" and result["device"] == "cpu" and result["epochs"] == 2
    for name in ("model.pt", "meta.json", "metrics.json", "metrics.csv", "_SUCCESS", "checkpoints/best.pt"):
        assert (out / name).exists(), name
    meta = json.loads((out / "meta.json").read_text())
    prepared = json.loads((Path(prepared_dir) / "meta.json").read_text())
    assert meta["data"]["input_sha256"] == prepared["input"]["sha256"] and len(prepared["input"]["sha256"]) == 64
    assert abs(meta["valid_mse"] - min(m["valid_mse"] for m in meta["history"])) < 1e-4
    # About 38 steps an epoch, capped at 19 steps' decay: each step paid about half of wd 1.5.
    steps = math.ceil(prepared["counts"]["train_rows"] / 512)
    assert steps > 19 and result["wd_per_step"] == pytest.approx(1.5 * 19 / steps, rel=1e-6)

    items = pd.read_parquet(out / "item_factors")
    known = pd.read_parquet(f"{prepared_dir}/items").sort_values("item_idx")
    assert items["id"].tolist() == known["item_id"].tolist()
    assert len(items["features"].iloc[0]) == 6

    model = TrainedModel.load(str(out))
    assert model.args.name == "dot_bias" and model.version == meta["model_version"]
    # The exported factors are the best epoch's weights, the same as model.pt's.
    assert torch.allclose(torch.tensor(items["features"].iloc[3]), model.module.i_weight.weight[3])

    assert main(_args(prepared_dir, out)) == 2
    assert "output already exists" in capsys.readouterr().err
    assert main(_args(prepared_dir, out, "--resume", "--set", "train.epochs=3")) == 0
    assert [m["epoch"] for m in json.loads((out / "metrics.json").read_text())] == [1, 2, 3]


def test_cf_train_lr_find(prepared_dir, tmp_path, capsys):
    out = tmp_path / "lr"
    assert main(_args(prepared_dir, out, "--lr-find", "--set", "train.lr_find_steps=60",
                      "--set", "train.loader=memory")) == 0
    assert "suggested learning rate" in capsys.readouterr().out
    assert (out / "lr_find.png").exists()
    assert len(json.loads((out / "lr_find.json").read_text())["lrs"]) > 10


def test_cf_train_bad_config_and_data(tmp_path, capsys):
    assert main(["--set", "train.modle=dot"]) == 2
    assert "unknown config key 'train.modle'" in capsys.readouterr().err
    assert main(["--set", f"train.data={tmp_path}", "--set", f"train.output={tmp_path}/m"]) == 2
    assert "no meta.json" in capsys.readouterr().err


def _one_error_line(err: str, expected: str) -> None:
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], err[-2000:]
    assert "Traceback" not in err and sum(line.startswith("error: ") for line in lines) == 1


def _broken_copy(prepared_dir, tmp_path, name):
    broken = tmp_path / name
    shutil.copytree(prepared_dir, broken)
    return broken


def test_former_value_errors_are_one_line_and_exit_2(prepared_dir, tmp_path, capsys):
    # Sharding needs the streaming loader: refused before any data is read.
    assert main(_args(prepared_dir, tmp_path / "a", "--set", "train.loader=memory", "--set", "train.cur_shard=0",
                      "--set", "train.shard_count=2")) == 2
    _one_error_line(capsys.readouterr().err, "needs the petastorm loader, but train.loader=memory")
    # An id map that is not contiguous (not a prepare output, or a damaged one).
    broken = _broken_copy(prepared_dir, tmp_path, "gap")
    users = pd.read_parquet(broken / "users")
    shutil.rmtree(broken / "users")
    (broken / "users").mkdir()
    users.assign(user_idx=users["user_idx"] + 1).to_parquet(broken / "users" / "part-0.parquet")
    assert main(_args(broken, tmp_path / "b", "--set", "train.epochs=1")) == 2
    _one_error_line(capsys.readouterr().err, "user_idx is not contiguous from 0")
    # The learning-rate finder on an empty training split.
    empty = _broken_copy(prepared_dir, tmp_path, "empty")
    train = pd.read_parquet(empty / "train")
    shutil.rmtree(empty / "train")
    (empty / "train").mkdir()
    train.iloc[:0].to_parquet(empty / "train" / "part-0.parquet")
    assert main(_args(empty, tmp_path / "c", "--lr-find", "--set", "train.loader=memory")) == 2
    _one_error_line(capsys.readouterr().err, "learning-rate finder recorded no loss")


def test_divergence_exits_4_with_json_logs(prepared_dir, tmp_path):
    """Through the cf-train command: a diverging run is exit code 4, and --log-json makes every log line JSON."""
    done = subprocess.run([str(Path(sys.executable).parent / "cf-train"), "--log-json",
                           *_args(prepared_dir, tmp_path / "nan", "--set", "train.model=dot", "--set", "train.lr=1e12",
                                  "--set", "train.loader=memory", "--set", "train.wd=0")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 4, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    _one_error_line(done.stderr, "lower train.lr")
    logs = [json.loads(line) for line in lines[:-1] if line.startswith("{")]
    assert logs and {"time", "level", "logger", "message"} <= set(logs[0])
    assert any("resolved config" in entry["message"] for entry in logs)
    assert not [line for line in lines if re.match(r"^\d{4}-\d\d-\d\d [\d:,]+ [A-Z]+ cfmodel", line)]  # no text logs
    assert not (tmp_path / "nan").exists()  # nothing published


def test_auto_loader_and_l2_weight_decay(prepared_dir, tmp_path, capsys):
    rows = sum(len(pd.read_parquet(f"{prepared_dir}/{s}")) for s in ("train", "valid"))
    for limit, kind in ((rows, "memory"), (rows - 1, "petastorm")):
        assert main(_args(prepared_dir, tmp_path / kind, "--set", "train.loader=auto", "--set",
                          f"train.memory_max_rows={limit}", "--set", "train.epochs=1")) == 0
        assert json.loads(capsys.readouterr().out)["loader"] == kind
    # L2 on the batch's rows (the lesson's weight decay) learns the planted signal too.
    assert main(_args(prepared_dir, tmp_path / "l2", "--set", "train.wd_mode=l2", "--set", "train.wd=0.0001",
                      "--set", "train.epochs=4", "--set", "train.loader=memory", "--set", "train.lr=0.01")) == 0
    result = json.loads(capsys.readouterr().out)
    valid = pd.read_parquet(f"{prepared_dir}/valid")
    mean = pd.read_parquet(f"{prepared_dir}/train")["rating"].mean()
    assert result["valid_mse"] < 0.6 * float(((valid["rating"] - mean) ** 2).mean()), result
