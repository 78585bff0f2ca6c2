PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
LINTED := pipeline tests bench

.PHONY: demo test test-fast lint lock readme install clean

# Exact versions with hashes from the lock, then the package itself without touching them.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q -n 2 --dist loadscope --durations=15

# Everything but the tests marked slow (long property, kill and end-to-end tests): under two minutes.
test-fast: lint
	$(PY) -m pytest -q -n 2 --dist loadscope -m "not slow" --durations=5

demo: $(STAMP)
	$(PY) -m pipeline.tools.demo

# docs/demo.md's demo output, regenerated from a real `make demo`, and the README's excerpt of it refreshed
# (tests/test_docs.py checks both are current).
readme: $(STAMP)
	$(PY) tests/readme_demo.py

# Refresh the lock from pyproject.toml's ranges (needs the package index).
lock: $(STAMP)
	$(PY) -m pip install --quiet pip-tools
	$(VENV)/bin/pip-compile --quiet --extra test --extra bench --all-build-deps --allow-unsafe --strip-extras \
		--generate-hashes --no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml
	rm -f $(STAMP)

clean:
	rm -rf $(VENV) reports/demo
