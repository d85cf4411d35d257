"""The pipeline: versioned runs, fingerprints and the ``latest`` pointer (:mod:`.runs`), what a
run records of its environment (:mod:`.environment`), and the pipeline itself (:mod:`.stage`:
``run_pipeline``, ``main``)."""
from cfmodel.pipeline.stage import main, run_pipeline

__all__ = ["main", "run_pipeline"]
