# Two commands do everything on a fresh machine with Python 3.10+:
#   make demo   generate a low-resource corpus, pre-train (BEST-RQ, PoM), fine-tune
#               and train from scratch on 5 labelled minutes (CTC), transcribe
#   make test   lint and run the test suite
# Both create (or reuse) .venv and install the pinned requirements first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: setup demo test lint bench-quick

$(INSTALLED): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $(INSTALLED)

setup: $(INSTALLED)

demo: $(INSTALLED)
	$(PY) -m tools.demo --out results/demo

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

bench-quick: $(INSTALLED)
	$(PY) benchmarks/mixer_scaling.py --quick --out results/bench-quick
	$(PY) benchmarks/train_lengths.py --quick --out results/train-lengths-quick
