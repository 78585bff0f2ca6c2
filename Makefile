PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
SPARK_STAMP := $(VENV)/.installed-spark
SPARK_LOCK := requirements-spark.lock
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

# The `spark` extra (the Spark engine's client and its local Sail server), locked apart so that `make demo` goes
# without it: requirements-spark.lock holds only the packages requirements.lock does not pin, with hashes.
$(SPARK_STAMP): $(STAMP) $(SPARK_LOCK)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(SPARK_LOCK)
	$(PY) -m pip check
	touch $(SPARK_STAMP)

lint: $(STAMP) $(SPARK_STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

test: lint $(SPARK_STAMP)
	$(PY) -m pytest -q -n 2 --dist loadscope --durations=15

# Everything but the tests marked slow (long property, kill and end-to-end tests): under two minutes.
test-fast: lint $(SPARK_STAMP)
	$(PY) -m pytest -q -n 2 --dist loadscope -m "not slow" --durations=5

demo: $(STAMP)
	$(PY) -m pipeline.tools.demo

# docs/demo.md's demo output, regenerated from a real `make demo`, and the README's excerpt of it refreshed
# (tests/test_docs.py checks both are current).
readme: $(STAMP)
	$(PY) tests/readme_demo.py

# Refresh both locks from pyproject.toml's ranges (needs the package index). The spark lock is compiled within
# requirements.lock's pins (-c), then the packages requirements.lock already pins are dropped from it.
lock: $(STAMP)
	$(PY) -m pip install --quiet pip-tools
	$(VENV)/bin/pip-compile --quiet --extra test --extra bench --all-build-deps --allow-unsafe --strip-extras \
		--generate-hashes --no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml
	$(VENV)/bin/pip-compile --quiet --extra spark --allow-unsafe --strip-extras --generate-hashes \
		--no-emit-index-url --no-emit-find-links -c $(LOCK) -o $(SPARK_LOCK) pyproject.toml
	awk 'NR == FNR { if (match($$0, /^[A-Za-z0-9._-]+==/)) pinned[tolower(substr($$0, 1, RLENGTH - 2))]; next } \
		/^#/ { skip = 0 } /^[A-Za-z0-9]/ { split($$0, name, "=="); skip = (tolower(name[1]) in pinned) } !skip' \
		$(LOCK) $(SPARK_LOCK) > $(SPARK_LOCK).tmp
	mv $(SPARK_LOCK).tmp $(SPARK_LOCK)
	rm -f $(STAMP) $(SPARK_STAMP)

clean:
	rm -rf $(VENV) reports/demo
