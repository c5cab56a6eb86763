# Every target works on a fresh clone: the virtualenv is created and filled on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint coverage bench clean soak fuzz

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# The suite under coverage: the build fails below the floor (`fail_under` in pyproject.toml).
test: $(STAMP)
	$(BIN)/python -m coverage run -m pytest
	$(BIN)/python -m coverage report

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

coverage: $(STAMP)
	$(BIN)/python -m coverage run -m pytest -q
	$(BIN)/python -m coverage html
	$(BIN)/python -m coverage report

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# ~300,000 requests under faults, cancellations and nginx reloads, then leak checks (minutes).
# Options: make soak SOAK_ARGS="--requests 50000 --seconds 120 --concurrency 64 --seed 1"
soak: $(STAMP)
	$(BIN)/python -m tests.soak $(SOAK_ARGS)

# Hypothesis against both HTTP/1.1 parsers and the three HTTP/2 engines, each alone and the
# parsers (parsers-agree) and h2 against native (engines-agree) side by side, minutes rather than
# the suite's bounded run. Options:
#   make fuzz FUZZ_MINUTES=10 FUZZ_ARGS="--targets native,engines-agree --examples 5000"
FUZZ_MINUTES ?= 3
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz --minutes $(FUZZ_MINUTES) $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
