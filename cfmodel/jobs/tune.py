"""spark-submit entry point of the tune stage; the stage lives in ``cfmodel.tune``.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[*]' jobs/tune.py --conf conf/local.yaml
"""
import sys

from cfmodel.tune import main

if __name__ == "__main__":
    sys.exit(main())
