# One command runs everything: `make test`. It builds its own virtual
# environments, so a fresh machine needs only python3 (and pypy3, and other
# CPythons, optionally: each one that is missing is skipped, and says so).
PYTHON ?= python3
PYPY ?= pypy3
VENV := .venv
PYPY_VENV := .venv-pypy
# Besides the default python3 and PyPy, the suite runs on the oldest and the newest CPython we support.
OTHER_PYTHONS ?= 3.9 3.13

.PHONY: test check lint typecheck pytest pytest-pypy pytest-versions pytest-compiled compiled package docs fuzz soak soak-quick serve echo serve-http bench bench-redis bench-http bench-proxy bench-report bench-deps clean

test: lint typecheck pytest pytest-pypy pytest-versions pytest-compiled package docs

# The quick loop while working: lint, types, and the suite on the default python3.
check: lint typecheck pytest

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[redis,test,lint]'
	touch $@

$(PYPY_VENV)/.installed: pyproject.toml
	$(PYPY) -m venv $(PYPY_VENV)
	$(PYPY_VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy --strict

pytest: $(VENV)/.installed
	$(VENV)/bin/python -m pytest

# The suite on each of OTHER_PYTHONS, found on PATH or in pyenv; a missing one is skipped, loudly.
pytest-versions:
	@for v in $(OTHER_PYTHONS); do \
		py=$$(tools/find_python.sh $$v); \
		if [ -z "$$py" ]; then echo "python$$v not found: skipping the CPython $$v run"; continue; fi; \
		if [ ! -f .venv-$$v/.installed ] || [ pyproject.toml -nt .venv-$$v/.installed ]; then \
			$$py -m venv .venv-$$v && .venv-$$v/bin/python -m pip install -q --upgrade pip && \
			.venv-$$v/bin/python -m pip install -q -e '.[redis,test]' && touch .venv-$$v/.installed || exit 1; \
		fi; \
		echo "== the suite on $$(.venv-$$v/bin/python --version), without the tests marked slow (CI's time)"; \
		.venv-$$v/bin/python -m pytest -q -m "not slow" || exit 1; \
	done

# The compiled build: evio and the examples' protocol packages compiled with mypyc (hatch_build.py,
# EVIO_COMPILE=examples), installed in their own venv, with the examples' folder on the path *after*
# site-packages, so that the examples' scripts import the compiled packages. The suite runs against it
# with PYTHONSAFEPATH=1 (a script's own folder is not put first) and without examples/ in pytest's path.
COMPILED_VENV := .venv-compiled
COMPILED_SOURCES := $(wildcard src/evio/*.py examples/redisclone/*.py examples/minihttp/*.py examples/tcplb/*.py)
$(COMPILED_VENV)/.installed: pyproject.toml hatch_build.py $(COMPILED_SOURCES)
	rm -rf $(COMPILED_VENV) dist-compiled
	$(PYTHON) -m venv $(COMPILED_VENV)
	$(COMPILED_VENV)/bin/python -m pip install -q --upgrade pip build
	EVIO_COMPILE=examples $(COMPILED_VENV)/bin/python -m build -q --wheel --outdir dist-compiled .
	$(COMPILED_VENV)/bin/python -m pip install -q "$$(ls dist-compiled/*.whl)[redis,test]"
	echo "$(CURDIR)/examples" > "$$($(COMPILED_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/evio-examples.pth"
	touch $@

compiled: $(COMPILED_VENV)/.installed

pytest-compiled: $(COMPILED_VENV)/.installed
	@echo "== the suite on the compiled build (mypyc)"
	PYTHONSAFEPATH=1 EVIO_EXPECT_COMPILED=1 $(COMPILED_VENV)/bin/python -m pytest -o 'pythonpath=bench fuzz tests'

# Build the sdist and the wheel, check what they hold, install the wheel in a fresh venv and use it.
package: $(VENV)/.installed
	rm -rf dist
	$(VENV)/bin/python -m build -q --outdir dist .
	$(VENV)/bin/python tools/check_package.py dist

# Coverage-guided fuzzing of the RESP readers and the HTTP parser, FUZZ_SECONDS (60) each.
FUZZ_SECONDS ?= 60
$(VENV)/.fuzz: $(VENV)/.installed
	$(VENV)/bin/python -m pip install -q -e '.[fuzz]' || echo "atheris did not install: fuzzing falls back to hypothesis"
	touch $@

fuzz: $(VENV)/.fuzz
	$(VENV)/bin/python fuzz/run.py --seconds $(FUZZ_SECONDS)

# The soak: 10,000 careless and hostile clients against the Redis clone and the HTTP server
# (docs/bench/soak.md); soak-quick is CI's short version (1,000 connections, 15 s each).
soak: $(VENV)/.installed
	$(VENV)/bin/python bench/soak.py

soak-quick: $(VENV)/.installed
	$(VENV)/bin/python bench/soak.py --quick

# The reference documentation, warnings as errors.
$(VENV)/.docs: $(VENV)/.installed
	$(VENV)/bin/python -m pip install -q -e '.[docs]'
	touch $@

# Links into Python's documentation come from a local copy of its inventory (Debian: python3-doc), so the
# build needs no network; without one they are left out, and the build says so.
PYTHON_INVENTORY ?= $(firstword $(wildcard /usr/share/doc/python3/html/objects.inv))
docs: $(VENV)/.docs
	@if [ -z "$(PYTHON_INVENTORY)" ]; then echo "no local inventory of Python's docs (apt-get install python3-doc): the docs link to none"; fi
	EVIO_DOCS_INTERSPHINX=$(or $(PYTHON_INVENTORY),0) $(VENV)/bin/python -m sphinx -W --keep-going -n -q -b html docs docs/_build/html

# The same suite on PyPy, where pypy3 is installed.
pytest-pypy:
	@if command -v $(PYPY) >/dev/null 2>&1; then \
		$(MAKE) $(PYPY_VENV)/.installed && $(PYPY_VENV)/bin/python -m pytest; \
	else \
		echo "pypy3 not found: skipping the PyPy run"; \
	fi

# The main example server (quick start): the Redis clone on 127.0.0.1:6380.
serve: $(VENV)/.installed
	$(VENV)/bin/python examples/redis_server.py

echo: $(VENV)/.installed
	$(VENV)/bin/python examples/echo_server.py

serve-http: $(VENV)/.installed
	$(VENV)/bin/python examples/http_server.py

# Benchmarks against the real thing; results go to docs/bench/. They need the
# peers installed: `make bench-deps` (Debian) installs them.
$(VENV)/.bench: $(VENV)/.installed
	$(VENV)/bin/python -m pip install -q -e '.[redis,test,lint,bench]'
	touch $@

bench: bench-redis bench-http bench-proxy

bench-redis: $(VENV)/.bench
	$(VENV)/bin/python bench/redis_bench.py

bench-http: $(VENV)/.bench
	$(VENV)/bin/python bench/http_bench.py

bench-proxy: $(VENV)/.bench
	$(VENV)/bin/python bench/proxy_bench.py

# Rebuild docs/bench's Markdown and charts from their JSON, without measuring.
bench-report: $(VENV)/.bench
	$(VENV)/bin/python bench/report.py docs/bench/redis.json docs/bench/http.json docs/bench/proxy.json

bench-deps:
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends redis-server redis-tools nginx-light wrk haproxy pypy3 pypy3-venv

clean:
	rm -rf $(VENV) $(PYPY_VENV) $(COMPILED_VENV) .venv-3.* dist dist-compiled docs/_build .mypy_cache .pytest_cache .ruff_cache
