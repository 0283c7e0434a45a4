# Two commands do all the set-up: `make test` and `make reproduce`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is pinned here (the set-up step), loosely in pyproject.toml (the library's requirement).
TORCH_PIN := torch==2.13.0
# One intra-op thread per process: for models this small two threads were far slower (see README, Performance).
export OMP_NUM_THREADS ?= 1

.PHONY: test reproduce report bench dist docs clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest

reproduce: $(VENV)/.installed
	$(VENV)/bin/nalm reproduce --profile quick
	$(VENV)/bin/nalm report

bench: $(VENV)/.installed
	$(VENV)/bin/nalm bench throughput

# The sdist and the wheel, in dist/ (the test suite builds them too, and installs the wheel into a fresh venv).
dist: $(VENV)/.installed
	$(PY) -m build --no-isolation --outdir dist .
	$(VENV)/bin/twine check --strict dist/*

# The documentation site (mkdocs.yml) into site/; open site/index.html, or serve it with `.venv/bin/mkdocs serve`.
docs: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) results .pytest_cache site .cache
