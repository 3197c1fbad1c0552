PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: install test test-gpu demo lint plugins dab-detr gpu-wheels gpu-bundle-cublas clean

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
	$(MAKE) -f plugins_src/sine_embedding/Makefile

# DAB-DETR R50 end to end (issue 7): TensorRT on a GPU; TARGET=onnxruntime runs it on a CPU
TARGET ?= tensorrt
dab-detr:
	$(BIN)/trtpipe run recipes/dab_detr.yaml --target $(TARGET)

# What the GPU image's python3 (torch, onnx, onnxruntime, numpy) lacks to run trtpipe's export stage, as wheels in
# $(WHEELS)/ for bench/gpu_session.sh to carry and install there (see bench/dab_detr.py).
WHEELS ?= .whl
GPU_PYTHON ?= 3.12
GPU_WHEELS := pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 \
	typing-extensions==4.16.0 loguru==0.7.3 pyyaml==6.0.3 rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 \
	pygments==2.21.0

# The GPU bundle with the real cuBLAS and NVRTC 12 (the image's NVRTC is CUDA 13's; with it and the cuBLAS stubs,
# TensorRT 8.6's Myelin logged "NVRTC Compilation failure"). With both, DAB-DETR-R50's Myelin regions still found no
# implementation in FP16 on the H200 (recipes/dab_detr.yaml: hence the LayerNorm plugin).
# ../shared/gpu/pack.sh pins nvidia-cublas-cu12 12.1.3.1, which this machine's package index lacks; 12.6.4.1 keeps the
# libcublas.so.12 soname that TensorRT 8.6 links. NVRTC lands in site/nvidia/cuda_nvrtc/lib, which
# bench/gpu_session.sh puts first on LD_LIBRARY_PATH. About 17 parts in .gpuc/.
gpu-bundle-cublas:
	mkdir -p build
	sed 's/12\.1\.3\.1/12.6.4.1/g; s|^HERE=.*|HERE=$(abspath ../shared/gpu)|' ../shared/gpu/pack.sh > build/pack_cublas.sh
	WITH_CUBLAS=1 EXTRA_PIP="nvidia-cuda-nvrtc-cu12==12.6.85" bash build/pack_cublas.sh .gpuc

gpu-wheels:
	rm -rf $(WHEELS)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d $(WHEELS) $(GPU_WHEELS)
	@du -sh $(WHEELS)

lint:
	$(BIN)/ruff check trtpipe tests bench

clean:
	rm -rf build .trtpipe recipes/.trtpipe
