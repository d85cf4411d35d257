"""The train stage: loaders (:mod:`.loaders`), the training loop (:mod:`.trainer`), the
learning-rate finder (:mod:`.lr_find`) and the stage itself (:mod:`.stage`: ``run``, ``main``)."""
from cfmodel.train.stage import main, run

__all__ = ["main", "run"]
