# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned to the build this machine serves locally; `pip install -e .` then keeps it.
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[dev,ray]"
	# fast-reid and torchreid are test-only references; their own pins (torch 1.x) must not be resolved.
	$(BIN)/pip install --quiet --no-deps fastreid==1.4.0 torchreid==0.2.5
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/crosscam demo --out runs/demo

clean:
	rm -rf $(VENV) runs .pytest_cache
