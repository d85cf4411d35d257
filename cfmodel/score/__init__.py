"""The score stage: scoring on Spark (:mod:`.recommend`: the item table, the broadcast block
scorer, the output forms) and the stage itself (:mod:`.stage`: ``run``, ``main``)."""
from cfmodel.score.stage import main, run

__all__ = ["main", "run"]
