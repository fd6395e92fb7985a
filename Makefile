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

# --- Lambda package: `sam build` runs `make build-DependenciesLayer` and `make build-<Function>` (template.yaml,
# BuildMethod: makefile) with ARTIFACTS_DIR set. The layer holds requirements.lock once for both functions; each
# function holds handler/ only. Paths come from this Makefile's own location, so the targets work whether SAM runs
# make in the project root (template's WorkingDirectory) or in a scratch copy of the source. The platform must
# match the functions' Architectures (arm64 -> manylinux2014_aarch64; x86_64 -> manylinux2014_x86_64).
NETPOL_ROOT := $(patsubst %/,%,$(dir $(abspath $(firstword $(MAKEFILE_LIST)))))
LAMBDA_PYTHON := $(or $(PYTHON),$(shell $(NETPOL_ROOT)/scripts/find-python))
LAMBDA_PLATFORM := manylinux2014_aarch64
# Left out of the layer: kubernetes 37's asyncio client (kubernetes/aio, 41 MB) with the aiohttp stack only it
# needs, and the generated per-resource API classes (kubernetes/client/api, 23 MB): the scanner calls
# ApiClient.call_api itself (handler/cluster_reader.py). tests/integration/test_package_build.py builds the layer
# and scans through it.
LAMBDA_UNUSED := aiohttp aiohttp-retry aiohappyeyeballs aiosignal attrs frozenlist multidict propcache yarl
LAMBDA_UNUSED_PATHS := kubernetes/aio kubernetes/client/api aws_xray_sdk/ext/aiohttp
# Bytecode in the zip: Lambda's /var/task and /opt are read-only, so Python cannot cache it there and would
# compile every imported module on each cold start. unchecked-hash keeps the .pyc valid whatever mtimes the zip
# gives the sources.
LAMBDA_COMPILE = $(LAMBDA_PYTHON) -m compileall -q -j 0 --invalidation-mode unchecked-hash

.PHONY: build-DependenciesLayer build-ScannerFunction build-WorkerFunction
build-DependenciesLayer:
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set (run through sam build)" >&2; exit 1; }
	$(LAMBDA_PYTHON) -c "import re, sys; unused = set(sys.argv[2:]); \
		print(''.join(l for l in open(sys.argv[1]) if re.split('[=<>~ ]', l.strip().lower().replace('_', '-'))[0] not in unused))" \
		"$(NETPOL_ROOT)/requirements.lock" $(LAMBDA_UNUSED) > "$(ARTIFACTS_DIR)/requirements.txt"
	$(LAMBDA_PYTHON) -m pip install --quiet --disable-pip-version-check --no-compile --no-deps \
		--platform $(LAMBDA_PLATFORM) --implementation cp --python-version 3.12 --only-binary=:all: \
		--target "$(ARTIFACTS_DIR)/python" -r "$(ARTIFACTS_DIR)/requirements.txt"
	rm -rf "$(ARTIFACTS_DIR)/requirements.txt" $(addprefix "$(ARTIFACTS_DIR)/python/,$(addsuffix ",$(LAMBDA_UNUSED_PATHS)))
	$(LAMBDA_COMPILE) "$(ARTIFACTS_DIR)/python"

build-ScannerFunction build-WorkerFunction:
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set (run through sam build)" >&2; exit 1; }
	rm -rf "$(ARTIFACTS_DIR)/handler"
	$(LAMBDA_PYTHON) -c "import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2], ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))" \
		"$(NETPOL_ROOT)/handler" "$(ARTIFACTS_DIR)/handler"
	$(LAMBDA_COMPILE) "$(ARTIFACTS_DIR)/handler"
