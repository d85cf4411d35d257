"""The ``pipeline`` section: versioned runs and which stages they run."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from cfmodel.errors import require as _require


PIPELINE_STAGES = ("generate", "prepare", "tune", "train", "score", "evaluate")


@dataclass
class PipelineConfig:
    """``cf-pipeline``: where versioned runs go and which stages run; keys in docs/configuration.md."""

    output_root: str = "runs"
    local_dir: str = "/tmp/cfmodel"
    stages: List[str] = field(default_factory=lambda: ["prepare", "train", "score", "evaluate"])
    keep_runs: int = 0

    def __post_init__(self) -> None:
        bad = [s for s in self.stages if s not in PIPELINE_STAGES]
        _require(not bad and self.stages, f"pipeline.stages must be a non-empty list from {PIPELINE_STAGES}, "
                                          f"got {bad or self.stages}")
        order = [PIPELINE_STAGES.index(s) for s in self.stages]
        _require(order == sorted(set(order)), f"pipeline.stages must be in the order {PIPELINE_STAGES}, no repeats")
        _require(self.keep_runs >= 0, "pipeline.keep_runs must be >= 0 (0 keeps every run)")
