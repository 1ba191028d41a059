# Two commands on a fresh machine: `make run` (the sample cohort on the offline model) and
# `make test`. Both create the virtual environment first if it is missing or out of date.
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin

.PHONY: run dry-run test lint bench clean-outputs

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,slurm]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/snakemake --cores $(CORES)

dry-run: $(BIN)/.installed
	$(BIN)/snakemake -n --cores $(CORES)

test: lint
	$(BIN)/python -m pytest -q -rs

lint: $(BIN)/.installed
	$(BIN)/ruff check daydream scripts tests bench
	$(BIN)/snakemake --lint --cores 1
	$(BIN)/snakefmt --check Snakefile rules

bench: $(BIN)/.installed
	$(BIN)/python bench/bench_offline_throughput.py

# Full reset keeping the definitions (SPEC §10).
clean-outputs:
	rm -rf data/gens data/cohorts/*/reports data/7_* data/logs
