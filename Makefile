# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make run    the default study end to end (creates .venv on first use)
#   make test   the whole test suite
PYTHON ?= python3
VENV   ?= .venv
CORES  ?= all
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast bench venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[workflow,test]'
	touch $(STAMP)

venv: $(STAMP)

# The default study (config/config.yaml, study "default") end to end with Snakemake: results in
# results/default/, the summary table printed at the end, then results/default/report.html. The
# workstation profile (profiles/default) applies by itself; the venv's bin goes first on PATH so
# the rules run its python and mpiexec. A finished point is never recomputed. CORES=1 runs one
# job at a time with one MPI rank.
REPORT := results/default/report.html
run: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --report $(REPORT) --quiet all
	@echo "Report: $(abspath $(REPORT))"

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest tests

test-fast: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest tests -m "not slow"

bench: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/bench_montecarlo.py

clean:
	rm -rf $(VENV) .pytest_cache
