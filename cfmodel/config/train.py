"""The ``train`` section (with ``train.distributed``), and how it is made concrete for the prepared data."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from cfmodel import objectives
from cfmodel.errors import ConfigError
from cfmodel.errors import require as _require

TRAIN_MODELS = ("dot", "dot_bias", "embedding_net")
SCHEDULES = ("sgdr", "one_cycle", "constant")
LOADERS = ("auto", "petastorm", "memory")
WD_MODES = ("adamw", "l2")
ROW_UPDATES = ("auto", "sparse", "dense")
SAMPLINGS = ("uniform", "popularity")
BACKENDS = ("auto", "gloo", "nccl")
CONFIDENCES = ("none", "log", "count")


@dataclass
class DistributedConfig:
    """Data-parallel training through Spark's ``TorchDistributor``; docs/operations.md "Training on the cluster"."""

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
    """Model, optimiser, schedule and data loading for ``cf-train``; keys in docs/configuration.md."""

    data: str = "data/prepared"
    output: str = "data/model"
    model: str = "dot_bias"
    objective: str = "auto"
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
    progress: Optional[bool] = None
    lr_find_start: float = 1e-6
    lr_find_end: float = 1.0
    lr_find_steps: int = 200
    negatives: int = 4
    softmax_samples: Optional[int] = None
    sampling: Optional[str] = None
    exclude_rated: bool = True
    positive_threshold: Optional[float] = None
    ranking_weight: float = 1.0
    hybrid_ranking: str = "softmax"
    rank_factors: int = 50
    rank_wd: float = 0.5
    rank_lr: Optional[float] = 0.03
    confidence: str = "none"
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    tuned: Optional[str] = None

    def __post_init__(self) -> None:
        _require(self.model in TRAIN_MODELS, f"train.model must be one of {TRAIN_MODELS}, got {self.model!r}")
        _require(objectives.valid(self.objective),
                 f"train.objective must be auto or one of {objectives.NAMES}, got {self.objective!r}")
        _require(self.sampling is None or self.sampling in SAMPLINGS,
                 f"train.sampling must be one of {SAMPLINGS} or null, got {self.sampling!r}")
        _require(self.hybrid_ranking in objectives.RANKING_LOSSES,
                 f"train.hybrid_ranking must be one of {objectives.RANKING_LOSSES}, got {self.hybrid_ranking!r}")
        _require(self.negatives >= 1 and (self.softmax_samples is None or self.softmax_samples >= 0)
                 and self.rank_factors >= 0,
                 "train.negatives must be >= 1, train.softmax_samples (or null) and train.rank_factors >= 0")
        _require(self.ranking_weight > 0 and self.rank_wd >= 0 and (self.rank_lr is None or self.rank_lr > 0),
                 "train.ranking_weight must be > 0, rank_wd >= 0, rank_lr > 0 or null")
        known = objectives.OBJECTIVES.get(self.objective)
        _require(not (known and known.ranking_loss(self.hybrid_ranking) == "softmax"
                      and self.model == "embedding_net" and self.softmax_samples == 0),
                 f"train.objective={self.objective} with embedding_net needs train.softmax_samples > 0 (a full "
                 f"softmax would run the network over every item for every row)")
        _require(not (known and known.ranking_head and self.model == "embedding_net"),
                 f"train.objective={self.objective} needs a bilinear model (dot or dot_bias) for its ranking head")
        _require(self.confidence in CONFIDENCES,
                 f"train.confidence must be one of {CONFIDENCES}, got {self.confidence!r}")
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
    def spec(self) -> objectives.Objective:
        """The objective's contract (:mod:`cfmodel.objectives`); ``auto`` must have been resolved for the
        data first (:func:`for_data`)."""
        return objectives.spec(self.objective)

    @property
    def weight_decay(self) -> float:
        """``wd``, or when null the objective's (:attr:`Objective.wd`)."""
        return self.wd if self.wd is not None else self.spec.wd

    @property
    def run_epochs(self) -> int:
        """``epochs``, or when null the objective's (:attr:`Objective.epochs`)."""
        return self.epochs if self.epochs is not None else self.spec.epochs

    @property
    def samples(self) -> int:
        """``softmax_samples``, or when null the objective's (:attr:`Objective.softmax_samples`)."""
        return self.softmax_samples if self.softmax_samples is not None else self.spec.softmax_samples

    @property
    def sampling_method(self) -> str:
        """``sampling``, or when null the objective's: ``uniform`` for ``bpr``, ``popularity`` (with the
        log-q correction) for the softmax terms."""
        return self.sampling if self.sampling is not None else self.spec.default_sampling(self.hybrid_ranking)

    @property
    def show_progress(self) -> bool:
        """``progress``, or when null whether stderr is a terminal: a scheduler's log (Airflow, YARN) gets one
        line per epoch, not a progress bar's carriage returns."""
        import sys

        return self.progress if self.progress is not None else sys.stderr.isatty()

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
    (:func:`derived_y_range`). A rating objective on events, a ``confidence`` on ratings, or a ``y_range``
    that does not cover the prepared ratings, is a :class:`ConfigError`. Idempotent."""
    feedback, scale = meta.get("feedback", "explicit"), meta.get("rating") or {}
    objective = objectives.resolve(cfg.objective, feedback, cfg.data).name
    if feedback == "explicit" and cfg.confidence != "none":
        raise ConfigError(f"train.confidence={cfg.confidence} weighs rows by their event count, but {cfg.data} "
                          f"holds ratings: use train.confidence=none, or prepare events (prepare.feedback=implicit)")
    y_range = cfg.y_range
    if y_range is None:
        y_range = derived_y_range(scale) if scale.get("min") is not None else list(LESSON_Y_RANGE)
    elif feedback == "explicit" and scale.get("min") is not None and not y_range[0] <= scale["min"] <= \
            scale["max"] <= y_range[1]:
        raise ConfigError(f"train.y_range={list(y_range)} does not cover the prepared ratings "
                          f"{scale['min']:g}..{scale['max']:g} ({cfg.data}); set it wider or null")
    return dataclasses.replace(cfg, objective=objective, y_range=[float(v) for v in y_range])
