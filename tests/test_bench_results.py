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


def test_only_the_full_default_ranking_run_replaces_the_table_the_docs_quote():
    """``bench_ranking``'s table name by its arguments. Mutants caught: a name that ignores ``--set`` (one
    name for every run replaced the shipped table with an experiment's), or one that ignores a partial run's
    protocols, objectives, baselines or tune row."""
    sys.path.insert(0, str(ROOT))
    try:
        from bench.bench_ranking import table_name
    finally:
        sys.path.remove(str(ROOT))
    assert table_name([]) == "bench_ranking"
    assert table_name(["--protocols", "random", "per_user"]) == "bench_ranking"  # the defaults, spelt out
    assert table_name(["--set", "train.softmax_samples=1024"]) == "bench_ranking_with_set"
    # Partial and with overrides: both suffixes (it was bench_ranking_with_set, a full run's with the same --set).
    assert table_name(["--protocols", "per_user", "--set", "train.epochs=24"]) == "bench_ranking_partial_with_set"
    for partial in (["--protocols", "per_user"], ["--no-tune"], ["--objectives", "hybrid", "softmax"],
                    ["--baselines", "[popular]"]):
        assert table_name(partial) == "bench_ranking_partial", partial
