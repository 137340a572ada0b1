# Two commands from a fresh clone: `make demo` and `make test`.  Both create .venv on first use and
# reinstall only when pyproject.toml changes (the stamp file carries its hash).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HASH := $(shell sha256sum pyproject.toml | cut -c1-16)
STAMP := $(VENV)/.installed-$(HASH)
# No GPU -> build sam2 without its CUDA extension (sam2._C); isam2 records which one it got.
SAM2_BUILD_CUDA ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)

.PHONY: demo test env lint bench clean

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@rm -f $(VENV)/.installed-*
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	# torch first, from the pinned releases; sam2 then builds against it without build isolation
	# (isolation would install a second multi-GB torch just to run sam2's setup.py).
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	SAM2_BUILD_CUDA=$(SAM2_BUILD_CUDA) $(BIN)/python -m pip install -q --no-build-isolation "sam2==1.1.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

demo: env
	$(BIN)/python -m isam2.train

test: env
	$(BIN)/python -m pytest -q -n 2 tests

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

bench: env
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) outputs stores data/synthetic multirun
