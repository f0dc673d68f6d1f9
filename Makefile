# Quick start: `make demo` and `make test` each create .venv and install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tokenjoule-installed

.PHONY: setup demo test clean

setup: $(STAMP)

# On a machine without an NVIDIA GPU, the CPU build of torch (served from local disk where
# available) is installed first so that `pip install -e .` does not pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  $(PY) -m pip install -q torch; else $(PY) -m pip install -q torch==2.13.0; fi
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/tokenjoule demo

# The type checker covers the runner, the meters and the records (config: pyproject [tool.mypy]).
test: setup
	$(PY) -m mypy src/tokenjoule/runs src/tokenjoule/energy src/tokenjoule/records.py
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache
