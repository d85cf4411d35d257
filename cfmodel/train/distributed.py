"""Data-parallel training placed by Spark: ``pyspark.ml.torch.distributor.TorchDistributor``.

With ``train.distributed.processes: N`` the train stage hands its fit to
TorchDistributor, which starts N processes (``local_mode: true``: on the
driver's machine through ``torchrun``; ``false``: as a barrier stage of N
tasks on the executors, one ``torchrun`` node each). Every process runs
:func:`~cfmodel.train.fit.fit_and_publish` with the loop of the single-process
trainer:

- rank r of N reads Petastorm shard r of N of both splits (whole row groups;
  ``prepare.min_files`` writes enough of them) and takes ``batch_size / N``
  rows a step, so a step still sees ``batch_size`` rows and the schedule keeps
  its length; every rank takes the same number of steps
  (:meth:`Trainer._batches <cfmodel.train.trainer.Trainer._batches>`);
- ``DistributedDataParallel`` averages the gradients: gloo on CPUs, which
  all-reduces the sparse row gradients of ``row_updates: sparse`` as they are,
  NCCL on GPUs, which takes dense gradients only;
- rank 0 alone writes checkpoints and the exported model, in the
  single-process format, so score and evaluate do not change, and ``--resume``
  hands rank 0's checkpoint to every rank.

A rank that fails writes its error to ``<train.output>.checkpoints/failed/``
(and one marked line to its log); the driver turns it into the job's one-line
error and exit code (:func:`rank_failure`). No rank waits for ever on a dead
one: torchrun stops the others when one exits, and every collective gives up
after ``train.distributed.timeout_s``. Like ``--resume``, reading a failed
rank's error needs the checkpoint directory where the driver sees it: with
``local_mode: false``, put ``train.output`` on storage every node mounts.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import shutil
import sys
from datetime import timedelta
from typing import Any, Callable, Dict, Optional, TypeVar

import torch

from cfmodel.config import TrainConfig
from cfmodel.errors import CfError, ConfigError, OutOfSpaceError, out_of_space
from cfmodel.train.fit import checkpoint_dir, fit_and_publish
from cfmodel.train.ranks import Ranks
from cfmodel.train.task_path import TaskPathCall

LOG = logging.getLogger(__name__)
# How a failing rank marks its error in its log.
ERROR_MARK = "CFMODEL_RANK_ERROR "
# TorchDistributor's barrier mode picks the rendezvous port by binding port 0 and letting it go, and torchrun
# binds it again later: another process can take it in between (EADDRINUSE, seen now and then on the test
# cluster). Nothing has trained then, so the run starts again, this many times at most.
PORT_RACE_RETRIES = 2
T = TypeVar("T")


class DistributedTrainingError(CfError):
    """A training process failed; carries the exit code its own error would have had."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def run_distributed(cfg: TrainConfig, resume: bool, spark: Any) -> Dict[str, Any]:
    """Train with ``cfg.distributed.processes`` processes through TorchDistributor; rank 0's result."""
    from pyspark.ml.torch.distributor import TorchDistributor

    d = cfg.distributed
    if spark is None:
        raise ConfigError("train.distributed needs a SparkSession: run the train stage with Spark "
                          "(cf-train, spark-submit jobs/train.py, or the pipeline)")
    check_shardable(cfg.data, d.processes)
    LOG.info("training on %d processes through TorchDistributor (%s, %s)", d.processes,
             "on this machine" if d.local_mode else "as barrier tasks on the executors", "GPU" if d.use_gpu else "CPU")
    distributor = TorchDistributor(num_processes=d.processes, local_mode=d.local_mode, use_gpu=d.use_gpu)
    # TaskPathCall: torchrun's processes on the executors import the project as the task does (--py-files).
    main = TaskPathCall(rank_main)
    return with_port_retries(lambda: distributor.run(main, cfg, resume), failure_dir(cfg), world=d.processes)


def with_port_retries(run: Callable[[], T], failed: str, retries: int = PORT_RACE_RETRIES,
                      world: Optional[int] = None) -> T:
    """``run()``, started again when its rendezvous port was taken before any rank ran (no rank left an error
    under ``failed``); any other failure, or the last, raises :func:`rank_failure`'s error."""
    attempt = 0
    while True:
        shutil.rmtree(failed, ignore_errors=True)
        try:
            return run()
        except Exception as exc:  # noqa: BLE001 - TorchDistributor reports a rank's failure as a bare RuntimeError
            taken = "address already in use" in str(exc).lower() or "EADDRINUSE" in str(exc)
            if attempt < retries and taken and not glob.glob(os.path.join(failed, "rank-*.json")):
                attempt += 1
                LOG.warning("distributed training: the rendezvous port was taken before torchrun bound it; "
                            "starting again (%d of %d)", attempt, retries)
                continue
            raise rank_failure(failed, exc, world) from exc


def failure_dir(cfg: TrainConfig) -> str:
    """Where failing ranks leave their errors (under the checkpoint directory)."""
    return os.path.join(checkpoint_dir(cfg.output), "failed")


def rank_main(cfg: TrainConfig, resume: bool) -> Optional[Dict[str, Any]]:
    """One training process (run by torchrun): join the group, fit this rank's shard, return rank 0's result."""
    from cfmodel.cli import setup_logging

    setup_logging()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    try:
        device, backend = _device_and_backend(cfg)
        # The processes on one machine share its cores.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        torch.distributed.init_process_group(backend, timeout=timedelta(seconds=cfg.distributed.timeout_s))
        try:
            ranks = Ranks(rank, world, device if backend == "nccl" else None)
            result = fit_and_publish(per_rank_config(cfg, world, device, backend), resume, ranks)
            return ranks.broadcast(result)  # every rank returns it: TorchDistributor may keep any one's
        finally:
            torch.distributed.destroy_process_group()
    except Exception as exc:
        _report(cfg, rank, exc)
        raise


def _report(cfg: TrainConfig, rank: int, exc: Exception) -> None:
    detail = {"rank": rank, "error": type(exc).__name__, "message": (str(exc).splitlines() or [""])[0],
              "exit_code": exc.exit_code if isinstance(exc, CfError) else space_code(exc)}
    print(ERROR_MARK + json.dumps(detail), file=sys.stderr, flush=True)
    os.makedirs(failure_dir(cfg), exist_ok=True)
    with open(os.path.join(failure_dir(cfg), f"rank-{rank}.json"), "w", encoding="utf-8") as fh:
        json.dump(detail, fh)


def space_code(exc: Exception) -> Optional[int]:
    """A full disk's exit code when ``exc`` is one (a rank's checkpoint write), else None (a crash)."""
    return OutOfSpaceError.exit_code if out_of_space(exc) else None


def per_rank_config(cfg: TrainConfig, world: int, device: torch.device, backend: str) -> TrainConfig:
    """What one rank trains with: its share of the batch, the Petastorm loader for ``auto`` (it reads shards;
    ``memory`` is refused by :func:`~cfmodel.train.loaders.make_loaders`), its device, and dense gradients
    under NCCL (which has no sparse all-reduce)."""
    row_updates = cfg.row_updates
    if backend == "nccl":
        if row_updates == "sparse":
            raise ConfigError("train.row_updates=sparse needs the gloo backend: NCCL all-reduces dense gradients "
                              "only (set train.row_updates=auto or dense, or train.distributed.backend=gloo)")
        row_updates = "dense"
    loader = "petastorm" if cfg.loader == "auto" else cfg.loader
    return dataclasses.replace(cfg, batch_size=max(1, cfg.batch_size // world), loader=loader,
                               device=str(device), row_updates=row_updates)


def _device_and_backend(cfg: TrainConfig) -> tuple:
    d = cfg.distributed
    if d.use_gpu:
        if not torch.cuda.is_available():
            raise ConfigError("train.distributed.use_gpu=true but this training process sees no GPU")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = d.backend if d.backend != "auto" else ("nccl" if d.use_gpu else "gloo")
    return device, backend


def rank_failure(failed: str, exc: Exception, world: Optional[int] = None) -> DistributedTrainingError:
    """The job's error for a failed run: the lowest failed rank's own error, as it left it under ``failed``
    (a user-facing one keeps its exit code), else what TorchDistributor said. A crash is reported with the
    ranks of ``world`` that left no error: a killed process (or a lost executor's) leaves none, and the
    others then fail on the broken connection, so the crash named may be a consequence."""
    reports = []
    for path in glob.glob(os.path.join(failed, "rank-*.json")):
        with open(path, encoding="utf-8") as fh:
            reports.append(json.load(fh))
    if not reports:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return DistributedTrainingError(f"distributed training failed and no process left an error (killed? "
                                        f"see the log above): {first}")
    # A user-facing error (bad config, diverged) over a crash it may have caused in another rank.
    detail = min(reports, key=lambda d: (d["exit_code"] is None, d["rank"]))
    silent = sorted(set(range(world or 0)) - {d["rank"] for d in reports})
    lost = ""
    if detail["exit_code"] is None and silent:
        which = f"process {silent[0]}" if len(silent) == 1 else f"processes {', '.join(map(str, silent))}"
        lost = (f" ({which} ended without an error of its own: killed, or its executor lost; rerun to resume "
                f"from the last checkpoint)")
    return DistributedTrainingError(f"training process {detail['rank']} failed: {detail['error']}: "
                                    f"{detail['message']}{lost}", detail["exit_code"] or 2)


def check_shardable(data: str, processes: int) -> None:
    """Fail early, naming the fix, when a split has fewer row groups than there are processes to shard it
    over (Petastorm would fail inside every process)."""
    import pyarrow.parquet as pq
    from pyarrow import fs

    from cfmodel.urls import to_url

    for split in ("train", "valid"):
        filesystem, root = fs.FileSystem.from_uri(to_url(f"{data.rstrip('/')}/{split}"))
        files = [f.path for f in filesystem.get_file_info(fs.FileSelector(root, recursive=True))
                 if f.is_file and f.base_name.endswith(".parquet")]
        groups = sum(pq.ParquetFile(filesystem.open_input_file(path)).metadata.num_row_groups for path in files)
        if groups < processes:
            raise ConfigError(f"{data}/{split} has {groups} Parquet row groups, fewer than "
                              f"train.distributed.processes={processes}: each process reads whole row groups; "
                              f"rerun prepare with prepare.min_files >= {processes}")
