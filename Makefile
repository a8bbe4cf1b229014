# One command runs everything: `make test`. It builds its own virtual
# environments, so a fresh machine needs only python3 (and pypy3, optionally).
PYTHON ?= python3
PYPY ?= pypy3
VENV := .venv
PYPY_VENV := .venv-pypy

.PHONY: test lint typecheck pytest pytest-pypy serve echo serve-http bench bench-redis bench-http bench-deps clean

test: lint typecheck pytest pytest-pypy

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

bench: bench-redis bench-http

bench-redis: $(VENV)/.bench
	$(VENV)/bin/python bench/redis_bench.py

bench-http: $(VENV)/.bench
	$(VENV)/bin/python bench/http_bench.py

bench-deps:
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends redis-server redis-tools nginx-light wrk pypy3 pypy3-venv

clean:
	rm -rf $(VENV) $(PYPY_VENV) .mypy_cache .pytest_cache .ruff_cache
