# Two commands: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# CPU build of PyTorch. For CUDA, install the torch wheel matching your driver first
# (README.md, "Install"); `pip install -e .` then keeps it.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test setup clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) demo.py --outdir=demo-out

test: setup
	$(PY) -m pytest tests

clean:
	rm -rf $(VENV) demo-out .pytest_cache
