# The two commands of the README: `make demo` and `make test`. Both create .venv from a bare
# Python 3.11 when it is missing (override with `make PYTHON=python3.12 ...`). dists-pytorch is
# installed without its dependencies: it declares torch, and we only read its DISTS weights file.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= runs/demo

.PHONY: demo test test-fast install bench clean

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.x'"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps dists-pytorch==0.1
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m maskvid.main --config=configs/demo.py --workdir=$(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q -x tests

# The unit tier only (no multi-process runs or stage pipelines): the edit-test loop.
test-fast: $(STAMP)
	$(PY) -m pytest -q -x -m "not slow" tests

bench: $(STAMP)
	$(PY) -m maskvid.bench.data
	$(PY) -m maskvid.bench.train_step --config=configs/tiny.py
	$(PY) -m maskvid.bench.sampler --config=configs/tiny.py

clean:
	rm -rf $(VENV) runs
