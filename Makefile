# The README's two commands are `make demo` and `make test`; everything else here serves them.
PYTHON := $(shell scripts/find-python)
VENV := .venv
SAM_VENV := .venv-sam
BIN := $(VENV)/bin

.PHONY: setup demo test acceptance bench build validate clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock -e '.[test]'
	touch $@

$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q --upgrade pip
	$(SAM_VENV)/bin/python -m pip install -q aws-sam-cli
	touch $@

demo: setup
	$(BIN)/python -m tests.support.sandbox

test: setup $(SAM_VENV)/.installed
	PATH="$(CURDIR)/$(SAM_VENV)/bin:$$PATH" $(BIN)/python -m pytest -n 2 -q

acceptance: setup
	../shared/acceptance/run

bench: setup
	$(BIN)/python -m bench.scan_one_cluster

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache
