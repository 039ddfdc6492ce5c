# The two commands a newcomer types: `make quickstart` and `make test`.
# Both create .venv on first use and install the locked stack (requirements.lock) into it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: quickstart test test-fast lint clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

## A small LOSO sweep (2 hold-outs x fp32/ptq/qat) on bundled synthetic data, then its report.
quickstart: $(STAMP)
	test -f data/synth-demo/manifest.parquet || \
	  $(BIN)/signbart synth data/synth-demo --signers 4 --classes 10 --reps 5 --seed 0
	$(BIN)/signbart sweep sweeps/quickstart.yaml --storage ray_results
	$(BIN)/signbart report ray_results/quickstart --out reports/quickstart

## The whole suite, slow end-to-end tests included (what CI runs).
test: $(STAMP)
	$(BIN)/python -m pytest -q -ra

## Everything but the slow end-to-end tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check signbart tests benchmarks

clean:
	rm -rf $(VENV) data/synth-demo ray_results reports/quickstart
