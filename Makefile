# Two commands on a fresh machine with Python 3.11:  make demo   |   make test
PYTHON ?= python3.11
VENV   := .venv
# test processes (pytest-xdist, CI's 2 cores); a file's tests stay in one process
TEST_WORKERS ?= 2
BIN    := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/dagster_home
export GX_ANALYTICS_ENABLED := false

.PHONY: demo test ui backfill clean

$(BIN)/anomaly-assets: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/anomaly-assets   ## generate the demo fleet and run the whole chain
	$(BIN)/anomaly-assets demo

test: $(BIN)/anomaly-assets   ## run the test suite
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

backfill: $(BIN)/anomaly-assets   ## backfill what $$ANOMALY_LANDING_DIR covers
	$(BIN)/anomaly-assets backfill

ui: $(BIN)/anomaly-assets   ## the Dagster UI and daemon on http://127.0.0.1:3000
	$(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf $(VENV) data
