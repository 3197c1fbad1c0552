PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: install test test-gpu demo lint plugins dab-detr clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[torch,dev]"

test:
	$(BIN)/python -m pytest -q -m "not gpu"

test-gpu:
	python -m pytest -q -m gpu

demo:
	$(BIN)/trtpipe run recipes/tiny.yaml

plugins:
	$(MAKE) -f plugins_src/layernorm/Makefile

lint:
	$(BIN)/ruff check trtpipe tests bench

clean:
	rm -rf build .trtpipe recipes/.trtpipe
