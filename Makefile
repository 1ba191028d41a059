# Two commands on a fresh machine: `make run` (the sample cohort on the offline model) and
# `make test`. Both create the virtual environment first if it is missing or out of date.
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin
# The lock (README, "Pinned installs"): uv.lock is made from pyproject.toml by `make lock`;
# requirements.lock is the same pins and hashes for pip. Both are committed.
LOCK := requirements.lock
LOCK_HINT := make: installing $(LOCK) with hash checking failed (pip says why above): either the lock is out of date or broken, so regenerate it with 'make lock', review the diff and commit, or a download is not what was locked: find out why, do not work around it
UV := UV_PYTHON=$(abspath $(BIN))/python UV_PYTHON_DOWNLOADS=never $(BIN)/uv
EXPORT := --format requirements-txt --all-extras --all-groups --no-emit-project

.PHONY: run dry-run test test-quick lint bench lock clean-outputs

# A new environment whenever pyproject.toml or the lock changes, holding exactly the lock:
# first the locked pip and setuptools, then every locked package (hash-checked, no build
# isolation, so nothing unpinned is fetched to build the one sdist), then the project itself
# without dependencies (editable; `compat` puts the checkout on the path, where Snakemake finds
# the logger plugin package snakemake_logger_plugin_daydream), then a check that the
# environment equals the lock.
$(BIN)/.installed: pyproject.toml uv.lock $(LOCK)
	@rm -f $@
	$(PYTHON) -m venv --clear $(VENV)
	$(PYTHON) -m daydream.lockfile select pip setuptools > $(VENV)/tools.lock
	@echo "$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(VENV)/tools.lock"
	@$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(VENV)/tools.lock \
		|| { echo "$(LOCK_HINT)" >&2; exit 1; }
	@echo "$(BIN)/python -m pip install --quiet --require-hashes --no-build-isolation -r $(LOCK)"
	@$(BIN)/python -m pip install --quiet --require-hashes --no-build-isolation -r $(LOCK) \
		|| { echo "$(LOCK_HINT)" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
	$(BIN)/python -m daydream.lockfile installed
	touch $@

run: $(BIN)/.installed
	$(BIN)/snakemake --cores $(CORES)

dry-run: $(BIN)/.installed
	$(BIN)/snakemake -n --cores $(CORES)

# Every test, in parallel (pytest-xdist; the tests of one xdist_group share a worker: the Slurm
# tests' one test cluster among them), in a random order (pytest-randomly prints its seed;
# --randomly-seed=N repeats that order). One worker more than the cores: the Slurm group's worker
# mostly waits on the Slurm plugin's status checks (measured on 2 cores: `-n 2` used 1.2 cores
# over 374 s; `-n 3` finished in 327 s).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
test: lint
	$(BIN)/python -m pytest -q -rs -n $(TEST_WORKERS) --dist loadgroup

# The quick part alone: no Snakemake run, no Slurm cluster, no browser (README "Development").
test-quick: $(BIN)/.installed
	$(BIN)/python -m pytest -q -rs -n auto --dist loadgroup -m "not e2e and not slurm and not browser"

lint: $(BIN)/.installed
	$(BIN)/ruff check daydream scripts tests bench
	$(BIN)/snakemake --lint --cores 1
	$(BIN)/snakefmt --check Snakefile rules

# Every goal of issue 24 against its baseline measured in the same run, in about 5 minutes on an
# idle 2-core machine: documents (full, dry, no-op) against the bare Snakefile, the tail after
# the last document, calls against the asyncio loop at caps 100, 200, 500. Bigger sizes (10k,
# 100k) and the other benches: bench/README.md.
bench: $(BIN)/.installed
	$(BIN)/python bench/bench_goals.py --docs 1000 --reps 1

# Regenerate the lock after editing pyproject.toml's dependencies: keeps every pin it can and
# adds or drops only what changed. Upgrade on purpose with UPGRADE="litellm numpy" (those
# packages) or UPGRADE=all. Then review `git diff uv.lock requirements.lock` and commit.
# Needs only the venv's uv: an edited pyproject.toml (or a broken lock) does not force a
# reinstall before locking.
lock: $(BIN)/uv
	$(UV) lock $(if $(filter all,$(UPGRADE)),--upgrade,$(addprefix --upgrade-package ,$(UPGRADE)))
	$(UV) export --frozen --quiet $(EXPORT) > $(LOCK).new
	@# Replaced only when its content changes, so an unchanged lock does not rebuild the venv.
	@if cmp -s $(LOCK).new $(LOCK); then rm $(LOCK).new; else mv $(LOCK).new $(LOCK); fi
	$(BIN)/python -m daydream.lockfile check
	@echo "next: git diff --stat uv.lock $(LOCK); make test; git commit pyproject.toml uv.lock $(LOCK)"

$(BIN)/uv:
	$(MAKE) $(BIN)/.installed

# Full reset keeping the definitions (SPEC §10).
clean-outputs:
	rm -rf data/gens data/cohorts/*/reports data/7_* data/logs
