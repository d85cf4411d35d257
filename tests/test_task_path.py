"""TaskPathCall: pickled inside a Spark task, the training function takes the task's Python path to the process
that unpickles it (torchrun's, under TorchDistributor), which then imports what the task imported."""
import json
import subprocess
import sys

from pyspark import cloudpickle

from cfmodel.train.task_path import TaskPathCall

# What TorchDistributor's training script does with the pickle (pyspark.ml.torch.distributor).
LOAD_AND_CALL = ("import sys; from pyspark import cloudpickle; "
                 "fn, args, kwargs = cloudpickle.loads(sys.stdin.buffer.read()); print(fn(*args, **kwargs))")


def _pickled_in_a_task(spark, shipped: str, wrap: bool) -> bytes:
    """A task with ``shipped`` on its path (as Spark puts a ``--py-files`` archive there) pickles its module's
    function, as TorchDistributor does for its processes: in a ``TaskPathCall`` or as it is."""
    def task(_):
        sys.path.insert(0, shipped)
        try:
            import shipped_probe
            fn = TaskPathCall(shipped_probe.answer) if wrap else shipped_probe.answer
            yield cloudpickle.dumps((fn, (20,), {}))
        finally:  # the Python worker lives on: leave its path and modules as they were
            sys.path.remove(shipped)
            sys.modules.pop("shipped_probe", None)

    return spark.sparkContext.parallelize([0], 1).mapPartitions(task).collect()[0]


def _load_and_call(pickled: bytes, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LOAD_AND_CALL], input=pickled, capture_output=True, cwd=cwd,
                          timeout=120)


def test_a_process_started_from_a_task_imports_what_the_task_imported(spark, tmp_path):
    """Mutants: the function pickled as it is (``distributor.run(rank_main, ...)``): the process cannot import
    its module (the control, last); the task's path put after the process's own, not in front: a copy of the
    module the process finds first (an older ``cfmodel`` installed on the node) is run instead of the task's."""
    shipped, empty, stale = tmp_path / "shipped", tmp_path / "empty", tmp_path / "stale"
    for folder in (shipped, empty, stale):
        folder.mkdir()
    (shipped / "shipped_probe.py").write_text("def answer(x):\n    return x + 22\n")
    # ``python -c`` has its working directory first on its path: there, a stale copy of the module.
    (stale / "shipped_probe.py").write_text("def answer(x):\n    return x\n")
    wrapped = _pickled_in_a_task(spark, str(shipped), wrap=True)

    for cwd in (empty, stale):
        done = _load_and_call(wrapped, cwd)
        assert done.returncode == 0 and done.stdout.decode().strip() == "42", (cwd, done.stderr.decode()[-2000:])

    plain = _load_and_call(_pickled_in_a_task(spark, str(shipped), wrap=False), empty)
    assert plain.returncode != 0 and b"No module named 'shipped_probe'" in plain.stderr


def test_pickled_on_the_driver_it_carries_no_path():
    """``local_mode: true``: torchrun's processes inherit the driver's environment; nothing is put on their
    path (the driver's own path, pickled into a task, would send executors to the driver's directories)."""
    before = list(sys.path)
    again = cloudpickle.loads(cloudpickle.dumps(TaskPathCall(json.dumps)))
    assert sys.path == before and (again.module, again.name) == ("json", "dumps")
    assert again({"a": 1}) == '{"a": 1}'
