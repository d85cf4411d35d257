"""Versioned pipeline runs: generate → prepare → train → score → evaluate on one config.

Layout under ``pipeline.output_root`` (a path or URL)::

    <root>/<run_id>/manifest.json        what ran, with what, and what it produced
    <root>/<run_id>/<stage>/             each stage's output (``_SUCCESS`` when complete)
    <root>/latest                        the id of the last run that fully succeeded

Each stage has a fingerprint: the SHA-256 of its config section (paths that
the pipeline sets excluded), its upstream fingerprints, the package version and,
for prepare, the input files' names, sizes and modification times. Rerunning a
run id skips every stage whose output is complete and whose fingerprint is
unchanged, and redoes the others (so a failed run resumes where it failed and a
changed config redoes the stages it affects). A new run copies each stage that
the ``latest`` run finished with the same fingerprint instead of recomputing
it. ``latest`` moves only after every stage, the quality gate included, has
succeeded.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence

from cfmodel.config import PIPELINE_STAGES, Config
from cfmodel.errors import ConfigError, InputError
from cfmodel.pipeline.environment import environment, git_revision
from cfmodel.storage import Storage

LOG = logging.getLogger("cfmodel.pipeline")
# What each stage reads: a stage redone in this invocation forces these to be redone too.
DEPENDS = {"generate": (), "prepare": ("generate",), "tune": ("prepare",), "train": ("prepare", "tune"),
           "score": ("prepare", "train"), "evaluate": ("prepare", "train")}
# Config keys the pipeline sets per run: they never enter a fingerprint.
WIRED = {"prepare": ("output",), "tune": ("data", "output"), "train": ("data", "output", "tuned"),
         "score": ("model", "data", "output"), "evaluate": ("model", "data", "output"), "generate": ()}


def new_run_id() -> str:
    """A sortable UTC timestamp id, e.g. ``20261129T162400Z``."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def is_local(path: str) -> bool:
    """A plain path (no URL scheme): the train stage can write it directly."""
    return "://" not in path


def wire(cfg: Config, run_dir: str, local_dir: str) -> Config:
    """A copy of ``cfg`` whose stage paths point into ``run_dir``.

    ``local_dir`` is where the train stage writes (``torch.save`` needs a local
    disk); when ``run_dir`` is a URL, the pipeline copies it up afterwards.
    """
    c = copy.deepcopy(cfg)
    if "generate" in c.pipeline.stages:
        c.prepare.input = generated_input(c)
    c.prepare.output = f"{run_dir}/prepare"
    c.train.data, c.train.output = c.prepare.output, f"{local_dir}/train"
    c.tune.data, c.tune.output = c.prepare.output, f"{run_dir}/tune"
    if "tune" in c.pipeline.stages:  # train takes up what the run's tune stage chose
        c.train.tuned = c.tune.output
    for section in (c.score, c.evaluate):
        section.model, section.data = f"{run_dir}/train", c.prepare.output
    c.score.output, c.evaluate.output = f"{run_dir}/score", f"{run_dir}/evaluate"
    return c


def generated_input(cfg: Config) -> str:
    """The file the generate stage writes for prepare; a different ``prepare.input`` named beside a generate
    stage is a contradiction (the user's data must never be replaced by the demo's without a word)."""
    name = "events.csv" if cfg.generate.feedback == "implicit" else "ratings.csv"
    made = f"{cfg.generate.output.rstrip('/')}/{name}"
    named = cfg.prepare.input
    if named is not None and named.rstrip("/") != made:
        raise ConfigError(f"prepare.input={named} but pipeline.stages runs generate, which writes {made}: "
                          f"drop generate from pipeline.stages to train on {named}")
    return made


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def fingerprints(cfg: Config, input_listing: List[Dict[str, Any]], version: str) -> Dict[str, str]:
    """Each stage's fingerprint (see the module docstring)."""
    def section(name: str) -> Dict[str, Any]:
        values = dataclasses.asdict(getattr(cfg, name))
        return {k: v for k, v in values.items() if k not in WIRED[name]}

    fp: Dict[str, str] = {"generate": _digest([version, section("generate")])}
    prepare_in = [version, section("prepare"), input_listing]
    if "generate" in cfg.pipeline.stages:
        prepare_in.append(fp["generate"])
    fp["prepare"] = _digest(prepare_in)
    fp["tune"] = _digest([version, section("tune"), section("train"), fp["prepare"]])
    fp["train"] = _digest([version, section("train"), fp["prepare"]]
                          + ([fp["tune"]] if "tune" in cfg.pipeline.stages else []))
    fp["score"] = _digest([version, section("score"), fp["train"], cfg.prepare.user_col, cfg.prepare.item_col])
    fp["evaluate"] = _digest([version, section("evaluate"), fp["train"], cfg.prepare.rating_min,
                              cfg.prepare.rating_max])
    return fp


class Run:
    """One run directory and its manifest, rewritten after every stage."""

    def __init__(self, storage: Storage, root: str, run_id: str, cfg: Optional[Config]) -> None:
        self.storage, self.root, self.run_id = storage, root.rstrip("/"), run_id
        self.dir = f"{self.root}/{run_id}"
        path = f"{self.dir}/manifest.json"
        previous = storage.read_json(path) if storage.exists(path) else {}
        if cfg is None:  # an earlier run, read only
            self.manifest = previous
            return
        self.manifest: Dict[str, Any] = {
            "run_id": run_id, "status": "running", "started": datetime.now(timezone.utc).isoformat(),
            "config": cfg.to_dict(), "versions": environment(), "git_revision": git_revision(),
            "stages": previous.get("stages", {}), "attempts": previous.get("attempts", 0) + 1}

    def done(self, stage: str, fingerprint: str) -> bool:
        """Whether ``stage`` finished in this run with the same fingerprint (and its output is intact)."""
        entry = self.manifest["stages"].get(stage, {})
        return (entry.get("status") == "succeeded" and entry.get("fingerprint") == fingerprint
                and (stage == "generate" or self.storage.exists(f"{self.dir}/{stage}/_SUCCESS")))

    def record(self, stage: str, **entry: Any) -> None:
        self.manifest["stages"][stage] = entry
        self.save()

    def save(self) -> None:
        self.storage.write_json(f"{self.dir}/manifest.json", self.manifest)

    def publish(self) -> None:
        """Point ``<root>/latest`` at this run (write then rename, so readers never see half a pointer)."""
        tmp = f"{self.root}/.latest.{self.run_id}.tmp"
        self.storage.write_text(tmp, self.run_id + "\n")
        if self.storage.exists(f"{self.root}/latest"):
            self.storage.delete(f"{self.root}/latest")
        self.storage.rename(tmp, f"{self.root}/latest")


def read_latest(storage: Storage, root: str) -> Optional[str]:
    """The run id ``<root>/latest`` points at, or None before the first successful run."""
    path = f"{root.rstrip('/')}/latest"
    return storage.read_text(path).strip() if storage.exists(path) else None


def previous_run(storage: Storage, root: str, run_id: str) -> Optional[Run]:
    """The run ``<root>/latest`` points at, whose finished stages a new run may copy; None before the first
    run, when it is ``run_id`` itself, or when its directory is gone (deleted by hand or by a retention rule
    on the store): the pointer then dangles, and this run does every stage itself."""
    latest = read_latest(storage, root)
    if not latest or latest == run_id:
        return None
    previous = Run(storage, root, latest, None)
    if "stages" not in previous.manifest:
        LOG.warning("%s/latest points at run %s, which has no manifest (deleted?): nothing to reuse from it",
                    previous.root, latest)
        return None
    return previous


def run_stages(run: Run, stages: Sequence[str], fps: Dict[str, str],
               execute: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]], check: Callable[[], None],
               previous: Optional["Run"] = None) -> None:
    """Run, skip or reuse each stage in order, record it, then apply ``check`` and publish.

    ``execute[stage](prior)`` runs one stage, replacing any output it left
    before, and returns its report; ``prior`` is the stage's manifest entry
    from an earlier attempt of this run (``status`` ``failed``, or ``running``
    when that attempt was killed), so a stage can resume. A stage not done in
    this run is copied from ``previous`` (the ``latest`` run) when that run
    finished it with the same fingerprint and nothing upstream was redone here.
    An exception marks the stage and the run failed in the manifest and
    propagates; ``latest`` is left where it was.
    """
    unknown = [s for s in stages if s not in PIPELINE_STAGES]
    if unknown:
        raise InputError(f"unknown stages {unknown}; choose from {PIPELINE_STAGES}")
    redone: set = set()
    for stage in stages:
        upstream_redone = bool(redone & set(DEPENDS[stage]))
        if not upstream_redone and run.done(stage, fps[stage]):
            LOG.info("stage %s: skipped, output current (fingerprint %s)", stage, fps[stage][:12])
            run.manifest["stages"][stage]["skipped"] = True
        elif not upstream_redone and previous is not None and stage != "generate" and previous.done(stage, fps[stage]):
            _reuse(run, previous, stage, fps[stage])
        else:
            _execute(run, stage, fps[stage], execute[stage])
            if stage != "generate":  # deterministic for its config, which prepare's fingerprint covers
                redone.add(stage)
    try:
        check()
    except BaseException as exc:
        run.manifest.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        run.save()
        raise
    run.manifest.update(status="succeeded", finished=datetime.now(timezone.utc).isoformat())
    run.save()
    run.publish()
    LOG.info("run %s succeeded; %s/latest points to it", run.run_id, run.root)


def _reuse(run: Run, previous: Run, stage: str, fingerprint: str) -> None:
    """Copy a stage that ``previous`` finished with the same fingerprint."""
    started = time.time()
    run.storage.copy(f"{previous.dir}/{stage}", f"{run.dir}/{stage}")
    run.record(stage, **{**previous.manifest["stages"][stage], "skipped": True,
                         "reused_from": previous.run_id, "seconds": round(time.time() - started, 2)})
    LOG.info("stage %s: copied from run %s, same fingerprint %s", stage, previous.run_id, fingerprint[:12])


def _execute(run: Run, stage: str, fingerprint: str, body: Callable[[Dict[str, Any]], Dict[str, Any]]) -> None:
    """Run one stage, recording it as running, then succeeded or failed."""
    started = time.time()
    prior = dict(run.manifest["stages"].get(stage) or {})
    LOG.info("stage %s: starting (fingerprint %s)", stage, fingerprint[:12])
    # Recorded before the work, so a run killed mid-stage (kill -9, a lost node) says so in its
    # manifest and the next attempt can resume the stage (train continues from its last checkpoint).
    run.record(stage, status="running", fingerprint=fingerprint)
    try:
        report = body(prior)
    except BaseException as exc:
        run.record(stage, status="failed", fingerprint=fingerprint, error=f"{type(exc).__name__}: {exc}",
                   seconds=round(time.time() - started, 2))
        run.manifest["status"] = "failed"
        run.save()
        raise
    seconds = round(time.time() - started, 2)
    run.record(stage, status="succeeded", fingerprint=fingerprint, seconds=seconds, skipped=False, report=report)
    LOG.info("stage %s: succeeded in %.1f s", stage, seconds)


def prune(storage: Storage, root: str, keep: int, protect: Sequence[str]) -> List[str]:
    """Delete all but the newest ``keep`` run directories (never those in ``protect``); returns those deleted."""
    if keep <= 0:
        return []
    runs = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in storage.list_dirs(root))
    runs = [r for r in runs if not r.startswith((".", "_"))]
    doomed = [r for r in runs[:-keep] if r not in protect]
    for r in doomed:
        storage.delete(f"{root.rstrip('/')}/{r}")
    return doomed


def local_staging(root: str, local_dir: str, run_id: str) -> str:
    """Where the train stage writes: inside the run when the root is local, else under ``local_dir``."""
    if is_local(root):
        return f"{root.rstrip('/')}/{run_id}"
    return os.path.join(local_dir, run_id)
