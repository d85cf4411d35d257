"""The train stage: loaders (:mod:`.loaders`), the training loop (:mod:`.trainer`), the
learning-rate finder (:mod:`.lr_find`) and the stage itself (:mod:`.stage`: ``run``, ``main``).

``run`` and ``main`` are imported on first use, so the loop and the loaders can be used
where only PyTorch is installed (a GPU node without Spark).
"""

__all__ = ["main", "run"]


def __getattr__(name: str):
    if name in __all__:
        from cfmodel.train import stage
        return getattr(stage, name)
    raise AttributeError(f"module 'cfmodel.train' has no attribute {name!r}")
