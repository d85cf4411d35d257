"""The evaluate stage: metrics (:mod:`.metrics`), baselines (:mod:`.baselines`), held-out
predictions (:mod:`.predict`), the model against the baselines (:mod:`.compare`), the lesson's
reading of the model (:mod:`.interpret`, :mod:`.plots`), the HTML page (:mod:`.html`), the
report's assembly (:mod:`.analysis`) and the stage itself (:mod:`.stage`: ``run``, ``main``)."""
from cfmodel.evaluate.stage import main, run

__all__ = ["main", "run"]
