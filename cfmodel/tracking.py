"""A pipeline run recorded in MLflow (``tracking.mlflow.uri``; off when null).

After the run's stages (succeeded or failed), :func:`record_run` writes one MLflow run named after the run
id: the resolved config as parameters (``section.key``), every epoch's training figures as step metrics,
the evaluate table as metrics (``<method>.<metric>``), the report, ``metrics.json`` and the manifest as
artifacts, and the trained model as a ``pyfunc`` (:class:`ListsModel`) whose ``predict`` takes a DataFrame
with a ``user_id`` column and returns their top-N lists as the score stage exports them. Each stage is a
nested run with its report; tune's trials are children of the tune stage's run. The pipeline's own outputs
stay the record of truth: a tracking server that cannot be reached is a logged warning, not a failed run.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from types import ModuleType
from typing import Any, Dict, Iterable, Optional

import pandas as pd

from cfmodel.config import Config
from cfmodel.errors import ConfigError

LOG = logging.getLogger(__name__)
EPOCH_METRICS = ("train_loss", "train_mse", "valid_loss", "valid_mse", "valid_rmse", "lr", "ratings_per_s")
RANKING_METRICS = ("rmse", "mae", "precision", "recall", "ndcg", "map", "coverage")


def _mlflow():
    try:
        import mlflow
    except ImportError as exc:
        raise ConfigError("tracking.mlflow.uri is set, but mlflow is not installed: "
                          "pip install 'cfmodel[mlflow]'") from exc
    return mlflow


def flat_params(cfg: Config) -> Dict[str, str]:
    """The resolved config as MLflow parameters: ``section.key`` -> its value as text (MLflow's limit: 6000)."""
    out: Dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value and prefix.count(".") < 2 and not prefix.endswith(".conf"):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            out[prefix] = json.dumps(value, default=str)[:6000] if not isinstance(value, str) else value[:6000]

    walk("", cfg.to_dict())
    return out


class ListsModel:
    """An MLflow ``pyfunc``: the trained model and each user's rated items, giving lists by user id.

    ``predict(DataFrame[user_id])`` -> ``user_id, rank, item_id, score, fallback``, the score stage's lists
    (the user's rated items left out; an unknown user gets the fallback list). Needs torch, no Spark."""

    def __init__(self, top_n: int) -> None:
        self.top_n = top_n

    def load_context(self, context) -> None:
        from cfmodel.model import TrainedModel

        self.model = TrainedModel.load(context.artifacts["model"])
        seen = pd.read_parquet(context.artifacts["seen"])
        self.seen = seen.groupby("user_id")["item_id"].apply(list).to_dict()

    def predict(self, context, model_input: pd.DataFrame, params: Optional[Dict[str, Any]] = None) -> pd.DataFrame:
        n = int((params or {}).get("n", self.top_n))
        return self.model.recommend_for_users(model_input["user_id"].tolist(), n, exclude=self.seen)


def _pyfunc_class():
    """:class:`ListsModel` as a subclass of ``mlflow.pyfunc.PythonModel`` (mlflow imported only when used)."""
    mlflow = _mlflow()
    return type("ListsModel", (ListsModel, mlflow.pyfunc.PythonModel), {})


def record_run(spark: Any, cfg: Config, run_id: str, run_dir: str, manifest: Dict[str, Any]) -> Optional[str]:
    """Record the pipeline run in MLflow when ``tracking.mlflow.uri`` is set; returns the MLflow run id
    (None when tracking is off, or the server failed: then a warning says why)."""
    tc = cfg.tracking.mlflow
    if not tc.uri:
        return None
    mlflow = _mlflow()
    try:
        mlflow.set_tracking_uri(tc.uri)
        mlflow.set_experiment(tc.experiment)
        with tempfile.TemporaryDirectory() as tmp:
            return _record(mlflow, spark, cfg, run_id, run_dir, manifest, tmp)
    except ConfigError:
        raise
    except Exception as exc:  # the outputs are written; tracking is a copy of their record
        LOG.warning("MLflow tracking at %s failed: %s: %s", tc.uri, type(exc).__name__, str(exc).splitlines()[0])
        return None


def _record(mlflow, spark, cfg: Config, run_id: str, run_dir: str, manifest: Dict[str, Any], tmp: str) -> str:
    local = _local_copy(spark, run_dir, tmp)
    status = "FINISHED" if manifest.get("status") == "succeeded" else "FAILED"
    with mlflow.start_run(run_name=run_id, tags={"cfmodel.run_id": run_id, "cfmodel.run_dir": run_dir}) as parent:
        mlflow.log_params(flat_params(cfg))
        for stage, entry in manifest.get("stages", {}).items():
            with mlflow.start_run(run_name=stage, nested=True):
                mlflow.log_params({"status": entry.get("status"), "skipped": bool(entry.get("skipped"))})
                report = entry.get("report") or {}
                mlflow.log_metrics({k: float(v) for k, v in report.items()
                                    if isinstance(v, (int, float)) and not isinstance(v, bool)})
                if stage == "tune":
                    _log_trials(mlflow, os.path.join(local, "tune"))
        _log_epochs(mlflow, os.path.join(local, "train", "metrics.json"))
        _log_evaluation(mlflow, os.path.join(local, "evaluate"))
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, default=str)
        mlflow.log_artifact(os.path.join(tmp, "manifest.json"))
        if os.path.exists(os.path.join(local, "train", "model.pt")):
            _log_model(mlflow, spark, cfg, local, tmp)
        mlflow.end_run(status=status)
        return parent.info.run_id


def _local_copy(spark, run_dir: str, tmp: str) -> str:
    """The run directory on the local disk (a URL's train, evaluate and tune outputs copied down)."""
    if "://" not in run_dir or run_dir.startswith("file:"):
        return run_dir.replace("file://", "")
    from cfmodel.storage import Storage

    storage, local = Storage(spark), os.path.join(tmp, "run")
    for stage in ("train", "evaluate", "tune"):
        if storage.exists(f"{run_dir}/{stage}"):
            storage.copy_to_local(f"{run_dir}/{stage}", os.path.join(local, stage))
    return local


def _json_or_none(path: str) -> Any:
    """A stage's JSON output, or None when the stage did not write it (it did not run, or failed)."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _log_epochs(mlflow, path: str) -> None:
    for row in _json_or_none(path) or []:
        metrics = {k: float(row[k]) for k in EPOCH_METRICS if isinstance(row.get(k), (int, float))}
        mlflow.log_metrics(metrics, step=int(row["epoch"]))


def metric_prefix(method: str) -> str:
    """The evaluation table's method as a metric-name prefix MLflow accepts (alphanumerics and ``_-. /:``):
    ``model`` for the model's row, ``user_movie_biases`` for ``user + movie biases``."""
    if method.startswith("model"):
        return "model"
    words = re.findall(r"[A-Za-z0-9]+", method.split(" (")[0])
    return "_".join(words) or "method"


def _log_evaluation(mlflow, evaluate: str) -> None:
    metrics = _json_or_none(os.path.join(evaluate, "metrics.json"))
    if metrics is None:
        return
    for row in metrics.get("methods", []):
        name = metric_prefix(row["method"])
        mlflow.log_metrics({f"{name}.{k}": float(row[k]) for k in RANKING_METRICS if row.get(k) is not None})
    for name in ("report.html", "metrics.json"):
        if os.path.exists(os.path.join(evaluate, name)):
            mlflow.log_artifact(os.path.join(evaluate, name), artifact_path="evaluate")


def _log_trials(mlflow, tune: str) -> None:
    last: Dict[Any, Dict[str, Any]] = {}
    for row in _json_or_none(os.path.join(tune, "results.json")) or []:  # each trial's furthest rung
        last[row.get("trial")] = row
    for trial, row in last.items():
        with mlflow.start_run(run_name=f"trial {trial}", nested=True):
            mlflow.log_params({k: v for k, v in (row.get("params") or {}).items()})
            value = row.get("value")
            if isinstance(value, (int, float)):
                mlflow.log_metric(str(row.get("metric", "metric")), float(value), step=int(row.get("epochs", 0)))


def package_dir(package: ModuleType, tmp: str) -> str:
    """``package`` as a directory, for the pyfunc's ``code_paths``: where it was imported from, or, imported
    from an archive (``spark-submit --py-files``: MLflow copies directories, and a path inside a zip is none),
    the archive's copy of it extracted under ``tmp``."""
    source = os.path.dirname(package.__file__)
    archive = getattr(package.__loader__, "archive", None)  # zipimport's loader names the archive
    if os.path.isdir(source) or not archive:
        return source
    inside = os.path.relpath(source, archive)
    out = os.path.join(tmp, "code")
    with zipfile.ZipFile(archive) as z:
        z.extractall(out, [n for n in z.namelist() if n.startswith(inside + "/")])
    return os.path.join(out, inside)


def _log_model(mlflow, spark, cfg: Config, local: str, tmp: str) -> None:
    """The trained model as a pyfunc, with each user's rated items (the lists leave them out)."""
    import cfmodel
    from cfmodel.dataset import PreparedData
    from cfmodel.storage import Storage

    data = PreparedData(cfg.score.data, Storage(spark))
    splits = ("train", "valid") if cfg.score.exclude_valid else ("train",)
    frames: Iterable = (data.frame(spark, s).select("user_id", "item_id") for s in splits)
    seen = pd.concat([f.toPandas() for f in frames], ignore_index=True)
    seen_file = os.path.join(tmp, "seen.parquet")
    seen.to_parquet(seen_file, index=False)
    model_dir = os.path.join(tmp, "model")
    os.makedirs(model_dir)
    shutil.copy(os.path.join(local, "train", "model.pt"), model_dir)
    example = pd.DataFrame({"user_id": seen["user_id"].drop_duplicates().head(3).tolist()})
    info = mlflow.pyfunc.log_model(
        artifact_path="model", python_model=_pyfunc_class()(cfg.tracking.mlflow.top_n),
        artifacts={"model": model_dir, "seen": seen_file}, code_paths=[package_dir(cfmodel, tmp)],
        input_example=example, pip_requirements=["torch", "pandas", "numpy", "pyarrow"],
        registered_model_name=cfg.tracking.mlflow.register_as)
    LOG.info("MLflow model: %s", info.model_uri)
