"""The ``train`` and ``tune`` sections of the configuration (with ``train.distributed``).

Split from :mod:`cfmodel.config`, which re-exports them; the same rules hold:
every key a field, every value checked where it is read.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from cfmodel.errors import ConfigError
from cfmodel.errors import require as _require

TRAIN_MODELS = ("dot", "dot_bias", "embedding_net")
SCHEDULES = ("sgdr", "one_cycle", "constant")
LOADERS = ("auto", "petastorm", "memory")
WD_MODES = ("adamw", "l2")
ROW_UPDATES = ("auto", "sparse", "dense")
OBJECTIVES = ("rating", "bpr", "softmax", "hybrid")
# The objectives whose models predict ratings (the others only rank).
RATING_OBJECTIVES = ("rating", "hybrid")
SAMPLINGS = ("uniform", "popularity")
HYBRID_RANKINGS = ("softmax", "bpr")
BACKENDS = ("auto", "gloo", "nccl")


@dataclass
class DistributedConfig:
    """Data-parallel training through Spark's ``TorchDistributor``; see README "Training on the cluster"."""

    processes: int = 0          # 0: train in the job's own process; N >= 1: N processes through TorchDistributor
    local_mode: bool = True     # True: on the driver's machine; False: as barrier tasks on the executors
    use_gpu: bool = False       # one GPU per process (local: the driver's; else spark.task.resource.gpu.amount)
    backend: str = "auto"       # auto: nccl on GPUs, gloo on CPUs
    timeout_s: int = 600        # a collective that waits this long on another process fails the run

    def __post_init__(self) -> None:
        _require(self.processes >= 0, "train.distributed.processes must be >= 0")
        _require(self.backend in BACKENDS, f"train.distributed.backend must be one of {BACKENDS}, "
                                           f"got {self.backend!r}")
        _require(self.timeout_s >= 1, "train.distributed.timeout_s must be >= 1")
        _require(not (self.backend == "nccl" and not self.use_gpu),
                 "train.distributed.backend=nccl needs train.distributed.use_gpu=true")



@dataclass
class TrainConfig:
    """Model, optimiser, schedule and data loading for ``cf-train``; see README "train"."""

    data: str = "data/prepared"
    output: str = "data/model"
    model: str = "dot_bias"
    objective: str = "rating"
    n_factors: int = 50
    y_range: Optional[List[float]] = None
    hidden: List[int] = field(default_factory=lambda: [10])
    dropouts: List[float] = field(default_factory=lambda: [0.5])
    emb_dropout: float = 0.05
    batch_size: int = 1024
    lr: float = 0.01
    wd: Optional[float] = None
    bias_wd: float = 0.0
    wd_mode: str = "adamw"
    wd_epoch_steps: Optional[int] = 100
    row_updates: str = "auto"
    schedule: str = "one_cycle"
    epochs: Optional[int] = None
    n_cycles: int = 3
    cycle_len: int = 1
    cycle_mult: int = 2
    loader: str = "auto"
    memory_max_rows: int = 1_000_000
    shuffle_buffer: int = 200_000
    reader_workers: int = 1
    cur_shard: Optional[int] = None
    shard_count: Optional[int] = None
    device: str = "auto"
    amp: bool = False
    seed: int = 42
    early_stopping: int = 0
    progress: bool = True
    lr_find_start: float = 1e-6
    lr_find_end: float = 1.0
    lr_find_steps: int = 200
    negatives: int = 4
    softmax_samples: int = 512
    sampling: Optional[str] = None
    exclude_rated: bool = True
    positive_threshold: Optional[float] = None
    ranking_weight: float = 1.0
    hybrid_ranking: str = "softmax"
    rank_factors: int = 16
    rank_wd: float = 0.1
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    tuned: Optional[str] = None

    def __post_init__(self) -> None:
        _require(self.model in TRAIN_MODELS, f"train.model must be one of {TRAIN_MODELS}, got {self.model!r}")
        _require(self.objective in OBJECTIVES + ("auto",),
                 f"train.objective must be auto or one of {OBJECTIVES}, got {self.objective!r}")
        _require(self.sampling is None or self.sampling in SAMPLINGS,
                 f"train.sampling must be one of {SAMPLINGS} or null, got {self.sampling!r}")
        _require(self.hybrid_ranking in HYBRID_RANKINGS,
                 f"train.hybrid_ranking must be one of {HYBRID_RANKINGS}, got {self.hybrid_ranking!r}")
        _require(self.negatives >= 1 and self.softmax_samples >= 0 and self.rank_factors >= 0,
                 "train.negatives must be >= 1, train.softmax_samples and train.rank_factors >= 0")
        _require(self.ranking_weight > 0 and self.rank_wd >= 0, "train.ranking_weight must be > 0, rank_wd >= 0")
        _require(not (self.objective == "softmax" and self.model == "embedding_net" and self.softmax_samples == 0),
                 "train.objective=softmax with embedding_net needs train.softmax_samples > 0 (a full softmax "
                 "would run the network over every item for every row)")
        _require(not (self.objective == "hybrid" and self.model == "embedding_net"),
                 "train.objective=hybrid needs a bilinear model (dot or dot_bias) for its ranking head")
        _require(self.schedule in SCHEDULES, f"train.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _require(self.loader in LOADERS, f"train.loader must be one of {LOADERS}, got {self.loader!r}")
        _require(self.row_updates in ROW_UPDATES,
                 f"train.row_updates must be one of {ROW_UPDATES}, got {self.row_updates!r}")
        _require(self.wd_mode in WD_MODES, f"train.wd_mode must be one of {WD_MODES}, got {self.wd_mode!r}")
        _require(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
                 f"train.device must be auto, cpu or cuda[:N], got {self.device!r}")
        _require(self.y_range is None or (len(self.y_range) == 2 and self.y_range[0] < self.y_range[1]),
                 "train.y_range must be [low, high] with low < high, or null (from the prepared rating scale)")
        _require(len(self.hidden) == len(self.dropouts), "train.hidden and train.dropouts must have the same length")
        _require(self.n_factors >= 1 and self.batch_size >= 1 and (self.epochs is None or self.epochs >= 1),
                 "train.n_factors, train.batch_size and train.epochs (or null) must be >= 1")
        _require(self.n_cycles >= 1 and self.cycle_len >= 1 and self.cycle_mult >= 1,
                 "train.n_cycles, train.cycle_len and train.cycle_mult must be >= 1")
        _require(self.lr > 0 and (self.wd is None or self.wd >= 0) and self.bias_wd >= 0,
                 "train.lr must be > 0, train.wd (or null) and train.bias_wd >= 0")
        _require(self.wd_epoch_steps is None or self.wd_epoch_steps >= 1, "train.wd_epoch_steps must be >= 1 or null")
        _require((self.cur_shard is None) == (self.shard_count is None),
                 "train.cur_shard and train.shard_count go together")

    @property
    def weight_decay(self) -> float:
        """``wd``, or when null the objective's: 1.5 for ``rating`` and ``hybrid`` (the rating tables),
        0.5 for ``bpr`` and ``softmax`` (with their longer schedule, see :attr:`run_epochs`)."""
        if self.wd is not None:
            return self.wd
        return 1.5 if self.objective in RATING_OBJECTIVES else 0.5

    @property
    def run_epochs(self) -> int:
        """``epochs``, or when null the objective's: 8 for ``rating`` and ``hybrid``, 24 for ``bpr`` and
        ``softmax``. A ranking-only model gains from three times the Adam steps with stronger decay (on
        MovieLens small, NDCG@10 1.62 -> 1.82x most popular; README "Ranking objectives"); an epoch
        costs the same, and a rating model overfits sooner."""
        if self.epochs is not None:
            return self.epochs
        return 8 if self.objective in RATING_OBJECTIVES else 24

    @property
    def sampling_method(self) -> str:
        """``sampling``, or when null the objective's: ``uniform`` for ``bpr``, ``popularity`` (with the
        log-q correction) for the softmax terms."""
        if self.sampling is not None:
            return self.sampling
        ranking = self.hybrid_ranking if self.objective == "hybrid" else self.objective
        return "uniform" if ranking == "bpr" else "popularity"

    def total_epochs(self) -> int:
        """Epochs the schedule runs: SGDR's cycles add up, the others use ``epochs``."""
        if self.schedule == "sgdr":
            return sum(self.cycle_len * self.cycle_mult ** k for k in range(self.n_cycles))
        return self.run_epochs


# The lesson's range, for 0.5..5 stars; what a model gets when neither config nor data names one.
LESSON_Y_RANGE = (0.0, 5.5)


def derived_y_range(scale: Dict[str, Any]) -> List[float]:
    """The sigmoid's range for a rating scale, as the lesson chose (0, 5.5) for 0.5..5 stars: the scale
    widened by a ninth of its span at each end, so the extreme ratings sit inside the sigmoid's reach."""
    low, high = float(scale["min"]), float(scale["max"])
    margin = (high - low) / 9 if high > low else 1.0
    return [round(low - margin, 6), round(high + margin, 6)]


def for_data(cfg: TrainConfig, meta: Dict[str, Any]) -> TrainConfig:
    """The section made concrete for a prepare output's ``meta``: ``objective: auto`` becomes ``hybrid`` for
    ratings and ``softmax`` for events (implicit feedback), ``y_range: null`` the prepared scale's range
    (:func:`derived_y_range`). A rating objective on events, or a ``y_range`` that does not cover the
    prepared ratings, is a :class:`ConfigError`. Idempotent."""
    feedback, scale = meta.get("feedback", "explicit"), meta.get("rating") or {}
    objective = cfg.objective
    if objective == "auto":
        objective = "softmax" if feedback == "implicit" else "hybrid"
    if feedback == "implicit" and objective in RATING_OBJECTIVES:
        raise ConfigError(f"train.objective={objective} predicts ratings, but {cfg.data} holds implicit feedback "
                          f"(events, no ratings): use train.objective=auto, softmax or bpr")
    y_range = cfg.y_range
    if y_range is None:
        y_range = derived_y_range(scale) if scale.get("min") is not None else list(LESSON_Y_RANGE)
    elif feedback == "explicit" and scale.get("min") is not None and not y_range[0] <= scale["min"] <= \
            scale["max"] <= y_range[1]:
        raise ConfigError(f"train.y_range={list(y_range)} does not cover the prepared ratings "
                          f"{scale['min']:g}..{scale['max']:g} ({cfg.data}); set it wider or null")
    return dataclasses.replace(cfg, objective=objective, y_range=[float(v) for v in y_range])


TUNE_METRICS = ("auto", "valid_rmse", "ndcg")


@dataclass
class TuneConfig:
    """Parallel hyperparameter search (``cf-tune``), trials as Spark tasks; see README "tune"."""

    data: str = "data/prepared"
    output: str = "data/tune"
    space: Dict[str, List[Union[int, float, str]]] = field(
        default_factory=lambda: {"n_factors": [10, 50], "wd": [0.1, 0.5, 1.5]})
    trials: int = 0                # 0: every point of the space's grid; N: N points drawn from it
    metric: str = "auto"           # auto: valid_rmse when the objective predicts ratings, else ndcg
    k: int = 10                    # ndcg@k
    relevance_threshold: Optional[float] = 4.0  # None: every validation rating is relevant
    min_epochs: int = 2            # rung 0's epochs; each rung multiplies them by eta
    eta: int = 2                   # each rung keeps the best 1/eta of the trials
    seed: int = 42

    def __post_init__(self) -> None:
        from cfmodel.tune.search import TUNABLE

        bad = sorted(k for k in self.space if k not in TUNABLE)
        _require(not bad, f"tune.space: {bad} cannot be tuned; choose from {list(TUNABLE)}")
        _require(all(isinstance(v, list) and v for v in self.space.values()),
                 "tune.space: every key needs a non-empty list of values")
        _require(self.metric in TUNE_METRICS, f"tune.metric must be one of {TUNE_METRICS}, got {self.metric!r}")
        _require(self.trials >= 0 and self.k >= 1 and self.min_epochs >= 1 and self.eta >= 2,
                 "tune.trials must be >= 0, tune.k and tune.min_epochs >= 1, tune.eta >= 2")
