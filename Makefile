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

run: $(STAMP)
	$(BIN)/kernel-eft simulate --activation relu --width 128 --depth 64 --time 4 --sw2 1 --sb2 0 \
	    --kin "1,0.6;0.6,1" --samples 4000 --seed 1 --out results/mc_demo.nc

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest tests

test-fast: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest tests -m "not slow"

bench: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/bench_montecarlo.py

clean:
	rm -rf $(VENV) .pytest_cache
