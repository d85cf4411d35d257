"""The training function as TorchDistributor hands it to its processes: importable wherever the task could.

With ``train.distributed.local_mode: false`` each barrier task on an executor
runs ``torchrun``, whose processes unpickle the training function and its
arguments. Spark puts the archives given to ``spark-submit --py-files`` on a
task's ``sys.path`` when the task starts, not on ``PYTHONPATH``, and torchrun's
processes inherit the environment only: on nodes where ``cfmodel`` is not
installed they stopped with ``No module named 'cfmodel'``.

:class:`TaskPathCall` carries the path across. TorchDistributor pickles the
function inside the task; pickled there, a ``TaskPathCall`` becomes a call to
:func:`_on_path` with the task's ``sys.path``, which is pickled by value (it
needs nothing from ``cfmodel`` to run). In the training process it puts the
task's path in front of its own, so the process imports what the task imported
(the archive before any ``cfmodel`` installed on the node), and then imports
the function. Pickle rebuilds objects in order, so the arguments pickled after
the function (the train config) import from that path too. Pickled on the
driver (Spark sending it to the task, or ``local_mode: true``, whose processes
inherit the driver's environment and with it ``spark-submit``'s Python path)
it stays an ordinary object.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, List

from pyspark import TaskContext, cloudpickle


def _on_path(path: List[str], module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported after ``path`` (a Spark task's ``sys.path``) is put in front of this
    process's own."""
    sys.path[:0] = path
    return getattr(importlib.import_module(module), name)


class TaskPathCall:
    """A picklable call of ``fn`` (a module-level function) that carries a Spark task's ``sys.path`` to the
    process that unpickles it, when it is pickled inside a task (the module docstring says why)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.module, self.name = fn.__module__, fn.__qualname__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.name)(*args, **kwargs)

    def __reduce__(self) -> tuple:
        if TaskContext.get() is None:  # on the driver
            return _rebuild, (self.module, self.name)
        return _on_path, (list(sys.path), self.module, self.name)


def _rebuild(module: str, name: str) -> TaskPathCall:
    """A :class:`TaskPathCall` of ``module.name`` (what a driver-side pickle holds)."""
    call = TaskPathCall.__new__(TaskPathCall)
    call.module, call.name = module, name
    return call


# This module's functions and class travel by value: the process that rebuilds them may not import cfmodel yet.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
