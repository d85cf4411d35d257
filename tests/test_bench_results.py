"""bench/results.py: a bench's table is written by the bench that measured it, once, by the parent process."""
import os
import subprocess
import sys

from helpers import ROOT

SCRIPT = """
import subprocess, sys
sys.path.insert(0, {root!r})
import bench.results as results
results.RESULTS = __import__("pathlib").Path({out!r})
with results.recorded("nested"):
    if "--child" in sys.argv:
        print('{{"seconds": 1.5}}')
    else:
        child = subprocess.run([sys.executable, __file__, "--child"], capture_output=True, text=True, check=True)
        print("| child said | " + child.stdout.strip().splitlines()[-1] + " |")
"""


def test_a_bench_that_runs_its_own_script_as_a_child_records_only_the_parents_table(tmp_path):
    """Mutant caught: ``recorded`` that records in the child too (its ``written: ...`` line came last, so
    bench_score's parent could not read the child's JSON, and the child overwrote the table)."""
    script = tmp_path / "nested.py"
    script.write_text(SCRIPT.format(root=str(ROOT), out=str(tmp_path / "results")))
    env = {k: v for k, v in os.environ.items() if k != "CFMODEL_BENCH_RECORDING"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "results" / "nested.md").read_text()
    assert '| child said | {"seconds": 1.5} |' in table and "written:" not in table
    assert done.stdout.count("written: ") == 1
