"""spark-submit entry point of the pipeline stage; the stage lives in ``cfmodel.pipeline``.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[*]' jobs/pipeline.py --conf conf/local.yaml
"""
import sys

from cfmodel.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
