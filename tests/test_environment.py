"""What a run records of the code it ran: the version (the manifest's ``versions``, part of every stage's
fingerprint) and the package itself (the MLflow pyfunc's ``code_paths``), wherever the code was imported from."""
import importlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cfmodel
from cfmodel.tracking import package_dir
from helpers import project_archive

PRINT_VERSION = ("import cfmodel; from cfmodel.pipeline.environment import environment; "
                 "print(cfmodel.__file__, environment()['cfmodel'])")


def test_the_version_recorded_is_that_of_the_code_imported(tmp_path):
    """A ``--py-files`` archive of another version than the node's installed ``cfmodel`` (or than none): the
    archive's version is recorded, so a new version's run does not take an old one's stages as current.
    Mutant caught: the installed distribution's version (``importlib.metadata``): 0.1.0 for the archive's
    9.9.9 here, and None on a node where nothing is installed."""
    archive = project_archive(tmp_path, version="9.9.9")
    done = subprocess.run([sys.executable, "-c", PRINT_VERSION], env={**os.environ, "PYTHONPATH": str(archive)},
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    imported_from, version = done.stdout.split()
    assert imported_from.startswith(str(archive)) and version == "9.9.9"


def test_a_package_imported_from_an_archive_is_given_to_mlflow_as_a_directory(tmp_path):
    """``spark-submit --py-files``: the driver imports ``cfmodel`` from the zip, and MLflow copies the pyfunc's
    ``code_paths`` as directories. Mutant caught: ``os.path.dirname(package.__file__)``, a path inside the
    zip (MLflow's copy failed with NotADirectoryError, and the run was recorded without its model)."""
    archive = tmp_path / "shipped.zip"
    files = {"zipped_pkg/__init__.py": "VALUE = 1\n", "zipped_pkg/sub/__init__.py": "", "other/x.py": ""}
    with zipfile.ZipFile(archive, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    sys.path.insert(0, str(archive))
    try:
        package = importlib.import_module("zipped_pkg")
        assert package.__file__.startswith(str(archive))
        got = package_dir(package, str(tmp_path / "tmp"))
    finally:
        sys.path.remove(str(archive))
        sys.modules.pop("zipped_pkg", None)
    assert os.path.isdir(got) and os.path.basename(got) == "zipped_pkg"
    assert sorted(p.relative_to(got).as_posix() for p in Path(got).rglob("*.py")) == ["__init__.py", "sub/__init__.py"]
    # Imported from a directory (an install, a checkout): that directory.
    assert package_dir(cfmodel, str(tmp_path)) == os.path.dirname(cfmodel.__file__)
