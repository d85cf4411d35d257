"""The ``tracking`` section: experiment tracking in MLflow, off unless a tracking URI is set."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from cfmodel.errors import require as _require


@dataclass
class MlflowConfig:
    """Where a pipeline run is recorded: each run an MLflow run, its stages nested runs, tune's trials their
    children; the resolved config as parameters, each epoch's figures and the evaluate table as metrics, the
    report, ``metrics.json`` and the manifest as artifacts, and the model as an MLflow ``pyfunc``."""

    uri: Optional[str] = None          # tracking URI (http://host:5000, databricks, file:/path); null: off
    experiment: str = "cfmodel"        # experiment name (created when missing)
    register_as: Optional[str] = None  # also register the model under this name in the model registry
    top_n: int = 10                    # list length of the logged model's predict

    def __post_init__(self) -> None:
        _require(self.top_n >= 1, "tracking.mlflow.top_n must be >= 1")
        _require(bool(self.experiment), "tracking.mlflow.experiment must not be empty")


@dataclass
class TrackingConfig:
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
