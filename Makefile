# The two README commands: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch, installed before the project so its `torch>=` bound is already met and
# pip never pulls a multi-GB CUDA build. On the CI machine this spec resolves to a wheel on
# disk; elsewhere add e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
DEMO_DIR ?= runs/demo
INSTALLED := $(VENV)/.installed

.PHONY: test test-compat demo bench clean pretrain-lock

$(INSTALLED): pyproject.toml
	@echo "make: installing torch and trm-kaggle[dev] into $(VENV) (once; about a minute)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

test: $(INSTALLED)
	$(BIN)/python -m pytest -q

# build -> pretrain -> package -> submit -> simulate -> score, all under $(DEMO_DIR)
demo: $(INSTALLED)
	$(BIN)/python -m trm_kaggle.demo --out $(DEMO_DIR)

# The code on an older torch, as Kaggle images ship it: `make test-compat TORCH=2.6.0` makes
# .venv-torch2.6.0 with that torch from the registry (a CUDA build of several GB; it runs on
# the CPU) and runs the tests of the model, training, checkpoints, optimizers and trm-submit.
# PIP_CONSTRAINT= lifts any machine-wide pip cap for that install. Not part of CI (the download).
TORCH ?= 2.6.0
NUMPY ?=
COMPAT_VENV := .venv-torch$(TORCH)$(if $(NUMPY),-numpy$(NUMPY))
COMPAT_TESTS ?= tests/test_model.py tests/test_train.py tests/test_checkpoint.py tests/test_optim.py \
	tests/test_submit.py tests/test_submit_parts.py
test-compat:
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	PIP_CONSTRAINT= $(COMPAT_VENV)/bin/pip install -q "torch==$(TORCH)" $(if $(NUMPY),"numpy==$(NUMPY)")
	PIP_CONSTRAINT= $(COMPAT_VENV)/bin/pip install -q -e '.[dev]' "torch==$(TORCH)" $(if $(NUMPY),"numpy==$(NUMPY)")
	$(COMPAT_VENV)/bin/python -c "import sys, torch, numpy; print('compat: python', sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__)"
	$(COMPAT_VENV)/bin/python -m pytest -q $(COMPAT_TESTS)

# The pretraining image's locked packages (pretrain/Dockerfile), for CPython 3.11 on manylinux
# x86_64, with every file's SHA-256. Re-run after changing pretrain/requirements.in.
pretrain-lock: $(INSTALLED)
	$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip compile pretrain/requirements.in --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--generate-hashes --custom-compile-command "make pretrain-lock" -o pretrain/requirements.lock

bench: $(INSTALLED)
	$(BIN)/python benchmarks/build_data.py
	$(BIN)/python benchmarks/train_step.py --preset cpu_tiny --batch 8 --steps 5

clean:
	rm -rf $(VENV) $(DEMO_DIR) benchmarks/out
