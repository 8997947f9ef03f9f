# The two commands of the README:
#   make demo   run the main job end to end on the embedded defaults (local store,
#               KFP's local runner, Airflow's dag.test), printing where everything went
#   make test   install what the tests need and run lint, types and the whole suite
# Both create ./.venv on first use; nothing needs to be installed beforehand but python3.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.carbonpipe-installed
SOURCES := carbonpipe components operators pipelines

.PHONY: install test lint demo bench clean image-print java pushgateway prometheus azurite if-cli

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@# PYTHONDONTWRITEBYTECODE is set on these machines: compile once so imports stay fast.
	$(PY) -m compileall -q $(SOURCES) > /dev/null
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

# Spark's tests (tests/esg/test_sql.py) run on Java: Debian's JRE when none is installed.
java:
	@command -v java > /dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless; }

# Kepler's tests (tests/measure/test_kepler.py) read a pod's energy through Debian's prometheus.
prometheus:
	@command -v prometheus > /dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO apt-get install -y -qq --no-install-recommends prometheus; }

# The Pushgateway's tests (tests/exporters/test_pushgateway.py) run Debian's prometheus-pushgateway.
pushgateway:
	@command -v prometheus-pushgateway > /dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO apt-get install -y -qq --no-install-recommends prometheus-pushgateway; }

# Azure Blob tests run Azurite, Microsoft's storage emulator, from the npm registry (Node >= 18),
# kept inside the ignored .venv; tests/azurite.py pins the same version.
AZURITE_VERSION := 3.37.0
AZURITE := $(VENV)/azurite/node_modules/.bin/azurite-blob

$(AZURITE):
	npm install --prefix $(VENV)/azurite --no-audit --no-fund --silent azurite@$(AZURITE_VERSION)

azurite: $(AZURITE)

# The Impact Framework's CLI (tests/sci/test_impact_framework.py runs if-run on our export):
# @grnsft/if from the npm registry, kept inside the ignored .venv, installed only if missing.
IF_RUN := $(VENV)/if/node_modules/.bin/if-run

$(IF_RUN):
	npm install --prefix $(VENV)/if --no-audit --no-fund --silent @grnsft/if@1.1.0

if-cli: $(IF_RUN)

test: install lint java pushgateway prometheus azurite if-cli
	$(PY) -m pytest -q

demo: install
	$(PY) -m carbonpipe.pipelines.demo

bench: install azurite
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) carbon-artifacts .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
