# The README's two commands are `make demo` and `make test`; everything else here serves them.
PYTHON := $(shell scripts/find-python)
VENV := .venv
SAM_VENV := .venv-sam
# checkov pins boto3==1.35.49 and packaging<24, which the project's own pins (boto3>=1.40, pytest's packaging>=24)
# exclude: like SAM CLI, it gets a venv of its own, on the tests' PATH.
CHECKOV_VENV := .venv-checkov
BIN := $(VENV)/bin
# The test oracle; its pins conflict with ours (pyproject.toml's test extras say why): installed without them.
NCA_PACKAGE := network-config-analyzer==2.1.0

.PHONY: setup demo test acceptance bench reliability build validate clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps '$(NCA_PACKAGE)'
	touch $@

$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q --upgrade pip
	$(SAM_VENV)/bin/python -m pip install -q aws-sam-cli
	touch $@

$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install -q 'checkov>=3.2,<4'
	touch $@

demo: setup
	$(BIN)/netpol-scan sandbox

test: setup $(SAM_VENV)/.installed $(CHECKOV_VENV)/.installed
	PATH="$(CURDIR)/$(SAM_VENV)/bin:$(CURDIR)/$(CHECKOV_VENV)/bin:$$PATH" $(BIN)/python -m pytest -n 2 -q

acceptance: setup
	../shared/acceptance/run

bench: setup
	$(BIN)/python -m bench.scan_one_cluster

reliability: setup
	$(BIN)/python -m bench.reliability --write docs/reliability.md

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) .aws-sam .pytest_cache

# --- Lambda package: `sam build` runs `make build-ScannerFunction` (template.yaml, BuildMethod: makefile) ---
# Paths come from this Makefile's own location, so the target works whether SAM runs make in the project
# root (template's WorkingDirectory) or in a scratch copy of the source. The platform must match the
# function's Architectures (arm64 -> manylinux2014_aarch64; x86_64 -> manylinux2014_x86_64).
NETPOL_ROOT := $(patsubst %/,%,$(dir $(abspath $(firstword $(MAKEFILE_LIST)))))
LAMBDA_PYTHON := $(or $(PYTHON),$(shell $(NETPOL_ROOT)/scripts/find-python))
LAMBDA_PLATFORM := manylinux2014_aarch64

.PHONY: build-ScannerFunction build-WorkerFunction
build-ScannerFunction build-WorkerFunction:
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set (run through sam build)" >&2; exit 1; }
	$(LAMBDA_PYTHON) -m pip install --quiet --disable-pip-version-check --no-compile \
		--platform $(LAMBDA_PLATFORM) --implementation cp --python-version 3.12 --only-binary=:all: \
		--target "$(ARTIFACTS_DIR)" -r "$(NETPOL_ROOT)/requirements.lock"
	rm -rf "$(ARTIFACTS_DIR)/handler"
	$(LAMBDA_PYTHON) -c "import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2], ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))" \
		"$(NETPOL_ROOT)/handler" "$(ARTIFACTS_DIR)/handler"
