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

# Where `make study` writes its sweep, and what `make figures` / `make notebooks` read.
STUDY_DIR ?= runs/study
NOTEBOOK_OUT ?= runs/notebooks

.PHONY: help venv train test lint format study figures notebooks bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project with its dev tools (done once, redone when pyproject.toml changes)

train: $(STAMP) ## train the default U-Net (BCE+dice) on the built-in synthetic data; runs land in runs/
	$(PY) -m carvana_seg.train $(ARGS)

test: $(STAMP) ## run the test suite (CPU-sized; GPU tests skip without CUDA)
	$(PY) -m pytest $(ARGS)

# The seed study's multirun; the sweep summary callback (conf/hydra/default.yaml) keeps summary.md and
# summary.csv of its jobs in $(STUDY_DIR).
RUN_STUDY = $(PY) -m carvana_seg.train -m experiment=study budget=short_cpu hydra.sweep.dir=$(STUDY_DIR) $(ARGS)

study: $(STAMP) ## the seed study on the built-in data: CNN vs U-Net x BCE/dice/BCE+dice, one multirun into runs/study
	$(RUN_STUDY)

# What figures and notebooks read: made by running the study when absent (a fresh clone). A failed or
# interrupted study leaves no summary.md behind, so the next `make notebooks` runs it again.
$(STUDY_DIR)/summary.md: | $(STAMP)
	$(RUN_STUDY) || { rm -f $@; exit 1; }

figures: $(STAMP) $(STUDY_DIR)/summary.md ## the study's figures and table into docs/images (runs the study first if runs/study has none)
	$(PY) -m carvana_seg.tools.figures $(STUDY_DIR) --out docs/images

notebooks: $(STAMP) $(STUDY_DIR)/summary.md ## execute notebooks/ into runs/notebooks as ipynb with outputs and HTML (02 reads the study: run first if absent)
	@mkdir -p $(NOTEBOOK_OUT)
	$(PY) -m papermill --no-progress-bar notebooks/01_data_and_metric.ipynb $(NOTEBOOK_OUT)/01_data_and_metric.ipynb
	$(PY) -m papermill --no-progress-bar notebooks/02_results.ipynb $(NOTEBOOK_OUT)/02_results.ipynb -p study_dir $(STUDY_DIR)
	$(VENV)/bin/jupyter nbconvert --to html $(NOTEBOOK_OUT)/*.ipynb

bench: $(STAMP) ## the speed table: loaders, training per model/size/precision, full-size prediction
	$(PY) -m carvana_seg.tools.bench $(ARGS)

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## remove runs, caches and generated data (keeps .venv)
	rm -rf runs outputs multirun .cache .pytest_cache .ruff_cache lightning_logs
