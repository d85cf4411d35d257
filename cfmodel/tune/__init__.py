"""The tune stage (``cf-tune``): parallel hyperparameter search as Spark tasks, with successive halving.

:mod:`.search` holds the pure parts (the trials of a space, the rungs, who
survives), :mod:`.trial` what one Spark task runs, :mod:`.stage` the stage
(``run``, ``main``), imported on first use.
"""

__all__ = ["main", "run"]


def __getattr__(name: str):
    if name in __all__:
        from cfmodel.tune import stage
        return getattr(stage, name)
    raise AttributeError(f"module 'cfmodel.tune' has no attribute {name!r}")
