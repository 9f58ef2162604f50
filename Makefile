# Every target that runs Python first makes .venv (once) and installs the project into it.
# `make help` lists the targets from their `##` comments.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# Extra Hydra overrides for the training targets, e.g. `make train ARGS="trainer.max_epochs=2"`.
ARGS ?=

.PHONY: help venv train test lint format clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project with its dev tools (done once, redone when pyproject.toml changes)

train: $(STAMP) ## train the default U-Net (BCE+dice) on the built-in synthetic data; runs land in runs/
	$(PY) -m carvana_seg.train $(ARGS)

test: $(STAMP) ## run the test suite (CPU-sized; GPU tests skip without CUDA)
	$(PY) -m pytest $(ARGS)

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## remove runs, caches and generated data (keeps .venv)
	rm -rf runs outputs multirun .cache .pytest_cache .ruff_cache lightning_logs
