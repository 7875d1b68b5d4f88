# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall only when the package metadata or the student's C step changes (editable install:
# Python edits need nothing; the C step is compiled by the install).
$(STAMP): pyproject.toml setup.py $(wildcard student/_kernel*.c student/_kernel*.h) | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kdstream demo

lint: $(STAMP)
	$(BIN)/ruff check .

# Integration tests start their own Kafka (KRaft, from Maven Central) and redis-server on
# loopback; KDSTREAM_REQUIRE_SERVICES makes a failed start an error, never a skip.
test: $(STAMP) lint
	KDSTREAM_REQUIRE_SERVICES=1 OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info student/_kernel*.so
