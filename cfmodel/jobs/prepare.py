"""spark-submit entry point of the prepare stage; the stage lives in ``cfmodel.prepare``.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[*]' jobs/prepare.py --conf conf/local.yaml
"""
import sys

from cfmodel.prepare import main

if __name__ == "__main__":
    sys.exit(main())
