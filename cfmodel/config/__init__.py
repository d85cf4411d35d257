"""Typed configuration: one section per stage, each a dataclass in its own module, read by :mod:`.load`.

A config file has one section per stage (``spark``, ``generate``, ``prepare``, ``train``, ``tune``,
``score``, ``evaluate``, ``pipeline``). The defaults here are the shipped defaults; an environment's file
(``conf/local.yaml``, ``conf/cluster.yaml``) holds only what differs. ``docs/configuration.md`` lists every
key (a test checks it against these dataclasses).
"""
from cfmodel.config.evaluate import BASELINES, IMPLICIT_BASELINES, EvaluateConfig
from cfmodel.config.generate import GenerateConfig
from cfmodel.config.load import RENAMED, USER_KEYS, Config, apply_overrides, load_config
from cfmodel.config.pipeline import PIPELINE_STAGES, PipelineConfig
from cfmodel.config.prepare import PrepareConfig
from cfmodel.config.score import ScoreConfig
from cfmodel.config.spark import SparkConfig
from cfmodel.config.tracking import MlflowConfig, TrackingConfig
from cfmodel.config.train import DistributedConfig, TrainConfig, derived_y_range, for_data
from cfmodel.config.tune import TUNABLE, TuneConfig

__all__ = ["BASELINES", "IMPLICIT_BASELINES", "PIPELINE_STAGES", "RENAMED", "TUNABLE", "USER_KEYS", "Config",
           "DistributedConfig", "EvaluateConfig", "GenerateConfig", "MlflowConfig", "PipelineConfig", "PrepareConfig",
           "ScoreConfig", "SparkConfig", "TrackingConfig", "TrainConfig", "TuneConfig", "apply_overrides",
           "derived_y_range", "for_data", "load_config"]
