# NoETL in Python: developer entry points.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test chaos lint bench clean install

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

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
