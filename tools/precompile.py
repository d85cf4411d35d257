"""Write the bytecode of the modules the project's processes import (``make install``).

pip installs with ``--no-compile`` (its own compiling goes one file at a time, on one core).
Without bytecode on disk every process compiles its imports again where ``PYTHONDONTWRITEBYTECODE``
is set: each training process compiles its thousand modules of torch anew. Compiling all of
site-packages (about 13,000 files, sympy, scipy and scikit-learn whole) spends most of its time on
modules nothing here imports. Importing what the jobs, Spark's Python workers, torchrun, the MLflow
server and the tests import (about 4,000 modules), with bytecode writing on, writes the bytecode of
exactly those, in two processes at once. A module this misses is compiled when first imported, as
without this step.

Usage: ``python tools/precompile.py`` with the venv's interpreter; exit 0 even if an optional
package (MLflow) is missing, since nothing here is needed for correctness.
"""
import os
import subprocess
import sys
import time

# Two groups that share few modules (torch's, and the rest), each in its own interpreter, one per core.
GROUPS = (
    # torch._dynamo (and sympy with it): the first optimizer step of every training process imports it.
    ("torch", "torch._dynamo", "torch.distributed.run", "torch.distributed.elastic.multiprocessing",
     "cfmodel.train.fit", "cfmodel.train.distributed", "cfmodel.tune", "cfmodel.score", "cfmodel.evaluate",
     "cfmodel.pipeline", "petastorm.pytorch", "pyspark.ml.torch.distributor"),
    ("pandas", "pyarrow.parquet", "pyarrow.dataset", "pyarrow.pandas_compat", "pyspark.sql",
     "pyspark.ml.recommendation", "pyspark.daemon", "pyspark.worker", "petastorm.reader", "matplotlib.pyplot",
     "seaborn", "cfmodel.prepare", "pytest", "mlflow", "mlflow.cli", "mlflow.server",
     "mlflow.store.tracking.sqlalchemy_store", "gunicorn.app.wsgiapp", "alembic.command"),
)

IMPORT = """
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError as exc:  # an optional package not installed: its modules are not needed
        print(f"precompile: {name} not imported ({exc})", file=sys.stderr)
"""


def main() -> int:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.time()
    procs = [subprocess.Popen([sys.executable, "-c", IMPORT, *group], env=env) for group in GROUPS]
    for group, proc in zip(GROUPS, procs):
        if proc.wait() != 0:
            print(f"precompile: importing {' '.join(group)} failed; those modules compile when first imported",
                  file=sys.stderr)
    print(f"precompile: wrote the bytecode of the imported modules in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
