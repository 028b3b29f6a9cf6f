# The two commands of the README. Each first brings the environment up to
# date (tools/setup_env.sh: a venv in .venv, mmcv built once and cached in
# ~/.cache/mmceformer), then does its job.
PYTHON ?= .venv/bin/python
ifdef MMCEFORMER_PYTHON
PYTHON := $(MMCEFORMER_PYTHON)
endif

.PHONY: setup demo test

setup:
	tools/setup_env.sh

demo: setup
	$(PYTHON) tools/demo.py

test: setup
	$(PYTHON) -m pytest tests -q
