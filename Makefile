# genser: `make demo` runs the main recipe on the embedded synthetic corpus; `make test` runs the
# fast tests (unit and small integration tests, ~1 min on 2 cores), `make check` all of them (also
# the recipe end to end, DDP, the Slurm cluster when there is one, the real corpora in ../shared).
# All install the environment on first use (tools/install.sh; a no-op afterwards).
SHELL := /bin/bash

# The python that tools/install.sh installs into (same order of choice as the script).
ifneq ($(GENSER_PYTHON),)
PYTHON ?= $(GENSER_PYTHON)
else ifneq ($(GENSER_VENV),)
PYTHON ?= $(GENSER_VENV)/bin/python
else ifneq ($(VIRTUAL_ENV),)
PYTHON ?= $(VIRTUAL_ENV)/bin/python
else
PYTHON ?= tools/venv/bin/python
endif

.PHONY: install demo test check bench

# Real data for `make bench` (bench/README.md): EmoDB and a whisper-base transformers folder.
SHARED ?= ../shared
EMODB ?= $(SHARED)/corpora/emodb
WHISPER ?= $(SHARED)/models/whisper-base

install:
	bash tools/install.sh

demo: install
	cd egs/synth && ./run.sh

# The markers of the heavy tests (tests/conftest.py), which `make test` leaves to `make check`.
FAST ?= not (slow or recipe or ddp or slurm)

test: install
	$(PYTHON) -m pytest tests -q -m "$(FAST)"

check: install
	$(PYTHON) -m pytest tests -q

bench: install
	OMP_NUM_THREADS=1 $(PYTHON) bench/accuracy.py --emodb $(EMODB) --whisper $(WHISPER) --out bench/results/accuracy.md
	OMP_NUM_THREADS=1 $(PYTHON) bench/cost.py --emodb $(EMODB) --whisper $(WHISPER) --out bench/results/cost.md
