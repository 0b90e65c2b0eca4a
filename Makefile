# Fresh clone: `make demo` (train + evaluate on synthetic shapes) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The torch build pinned for this project; override e.g. TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint format docs clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev,bench,tensorboard,plots,fasteval,export]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m visionmtl demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

# docs/config_reference.md from the config classes' field comments (a test checks it is current).
docs: $(STAMP)
	$(PY) -m visionmtl config --help-fields --out docs/config_reference.md

clean:
	rm -rf runs/demo data/shapes
