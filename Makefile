# NoETL in Python: developer entry points.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test chaos lint bench bench-peers clean install

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m compileall -q src  # an editable install writes no bytecode (nor does PYTHONDONTWRITEBYTECODE)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/noetl run examples/hello.yaml --set who=NoETL

# `make chaos` runs what is marked `chaos`: the chaos suite (tests/chaos kills workers and servers
# and stops the local NATS) and the distributed mode of the other suites (the conformance corpus
# and the nested-playbook metadata on 1 server + 2 workers over NATS). `make test` runs everything
# else.
test: $(STAMP)
	$(BIN)/pytest -q --ignore=tests/chaos -m "not chaos"

chaos: $(STAMP)
	$(BIN)/pytest -q -m chaos tests

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

# `make bench`: every figure of the performance targets with its target and a met / NOT MET mark
# (NOETL_BENCH_QUICK=1: a fast smoke run). `make bench-peers`: this project side by side with
# noetl 5.3.2 and DBOS 3.4, installed in bench/.peers-venv, in one run. See bench/README.md.
bench: $(STAMP)
	$(BIN)/python -u bench/run.py

bench-peers: $(STAMP)
	PY=$(PY) $(BIN)/python -u bench/peers.py

clean:
	rm -rf $(VENV) bench/.peers-venv .pytest_cache .mypy_cache .ruff_cache
