# `make demo`: install, then the whole pipeline on the bundled sample slide.
# `make test`: install, then the test suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench

$(BIN)/wsi-ccrl: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/wsi-ccrl

demo: install
	$(BIN)/wsi-ccrl demo --out demo-out

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/segment.py && $(BIN)/python benchmarks/train.py && $(BIN)/python benchmarks/label.py
