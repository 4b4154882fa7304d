# Set-up and entry points. Everything a fresh clone needs is installed here, into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup compare test lint bench evidence docs clean

setup: $(STAMP)

# The CPU build of torch goes in first: a bare `torch` requirement would pull a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

compare: setup
	$(BIN)/reglab compare

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks tools docs
	$(BIN)/ruff format --check src tests benchmarks tools docs

bench: setup
	@for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

# docs/evidence.md and its figures, from running every study it shows (about 2 minutes on two cores; by hand)
evidence: setup
	$(BIN)/python docs/make_evidence.py

# the documentation site, into site/ (strict: a broken reference or link fails; the tests build it too)
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build site src/*.egg-info .pytest_cache .ruff_cache
