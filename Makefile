# The two commands of the README (demo, test). Each first brings the
# environment up to date (tools/setup_env.sh: a venv in .venv, mmcv built
# once and cached in ~/.cache/mmceformer), then does its job.
# test-compat runs the suite again on the stack OpenMMLab ships wheels for
# (torch 2.1.2, in .venv-torch21, mmcv without compiled ops).
PYTHON ?= .venv/bin/python
ifdef MMCEFORMER_PYTHON
PYTHON := $(MMCEFORMER_PYTHON)
endif
COMPAT_VENV ?= .venv-torch21
COMPAT_TORCH ?= torch==2.1.2 torchvision==0.16.2

.PHONY: setup demo test test-compat gpu-check

setup:
	tools/setup_env.sh

demo: setup
	$(PYTHON) tools/demo.py

test: setup
	$(PYTHON) -m pytest tests -q

test-compat:
	MMCEFORMER_VENV=$(COMPAT_VENV) MMCEFORMER_MMCV=lite \
		MMCEFORMER_TORCH="$(COMPAT_TORCH)" tools/setup_env.sh
	MMCEFORMER_NO_MMCV_OPS=1 $(COMPAT_VENV)/bin/python -m pytest tests -q

gpu-check: setup
	tools/gpu_check.sh
