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

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -rs

lint: $(BIN)/.installed
	$(BIN)/ruff check daydream scripts tests bench
	$(BIN)/snakemake --lint --cores 1
	$(BIN)/snakefmt --check Snakefile rules

# Both benches at sizes that finish in under 5 minutes on a 2-core machine; every ratio is
# against its baseline measured in the same run. The issue's figures use bigger sizes, e.g.
#   bench/bench_throughput.py --docs 10000 --reps 3      (and --scaling for 1k/10k/100k)
#   bench/bench_calls.py --caps 100,200 --calls 528,2000 --reps 3
bench: $(BIN)/.installed
	$(BIN)/python bench/bench_throughput.py --docs 500 --reps 1
	$(BIN)/python bench/bench_calls.py --caps 100,200 --calls 528,800 --reps 1

# Full reset keeping the definitions (SPEC §10).
clean-outputs:
	rm -rf data/gens data/cohorts/*/reports data/7_* data/logs
