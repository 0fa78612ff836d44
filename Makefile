# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.run-stamp
DEV_STAMP := $(VENV)/.dev-stamp
# Ray workers run single-threaded BLAS; the driver and the plain baselines do the same.
export OMP_NUM_THREADS ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: install install-dev run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# What running needs (make run) ...
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# ... and what testing adds (make test): linters, torch, flwr, the platform's parts.
$(DEV_STAMP): pyproject.toml $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(RUN_STAMP)

install-dev: $(DEV_STAMP)

run: install
	$(BIN)/redfl run examples/digits_fedavg.toml

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	$(BIN)/mypy --allow-untyped-defs --allow-incomplete-defs tests bench examples

test: lint
	bash scripts/system-packages.sh
	$(BIN)/pytest --durations=15

bench: install-dev
	$(BIN)/python bench/star_overhead.py
	$(BIN)/python bench/lazy_nodes.py
	$(BIN)/python bench/robustness.py
	$(BIN)/python bench/decentralized_scale.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/population.py
	$(BIN)/python bench/broadcast.py
	$(BIN)/python bench/torch_scaling.py
	$(BIN)/python bench/hierarchy.py
	$(BIN)/python bench/faults.py
	$(BIN)/python bench/edge.py
	$(BIN)/python bench/platform_load.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/teardown.py
	test -x .bench/flower-venv/bin/python || $(BIN)/python bench/vs_flower.py --setup
	$(BIN)/python bench/vs_flower.py
	$(BIN)/python bench/secagg_math.py
	$(BIN)/python bench/secagg.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
