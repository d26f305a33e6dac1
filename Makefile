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

.PHONY: test demo bench clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

test: $(INSTALLED)
	$(BIN)/python -m pytest -q

# build -> pretrain -> package -> submit -> simulate -> score, all under $(DEMO_DIR)
demo: $(INSTALLED)
	$(BIN)/python -m trm_kaggle.demo --out $(DEMO_DIR)

bench: $(INSTALLED)
	$(BIN)/python benchmarks/build_data.py
	$(BIN)/python benchmarks/train_step.py --preset cpu_tiny --batch 8 --steps 5

clean:
	rm -rf $(VENV) $(DEMO_DIR) benchmarks/out
