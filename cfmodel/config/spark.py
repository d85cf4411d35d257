"""The ``spark`` section: how jobs start Spark."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Union


@dataclass
class SparkConfig:
    """How jobs start Spark.

    ``master`` is used only when the job is not launched by ``spark-submit``
    (which decides the master itself).
    """

    master: str = "local[*]"
    app_name: str = "cfmodel"
    log_level: str = "WARN"
    conf: Dict[str, Union[str, int, float, bool]] = field(default_factory=dict)
