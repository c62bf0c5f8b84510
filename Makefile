# The two commands (README): `make demo` and `make test`. Each sets itself up on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install tools clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,serve,dev]'
	touch $(STAMP)

install: $(STAMP)

tools: install

demo: install tools
	MREG=$(BIN)/mreg PY=$(BIN)/python scripts/demo.sh

test: install tools
	$(BIN)/pytest

clean:
	-$(BIN)/mreg dev down
	rm -rf $(VENV) catalog.db .mreg/dev
