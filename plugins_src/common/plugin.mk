# What the plugin Makefiles share: the toolchain, its flags, and the TensorRT headers and libnvinfer a plugin is built
# against. A plugin Makefile sets HERE (its own folder) and includes this file.
#
#   CUDA_HOME        CUDA toolkit (nvcc, cudart_static)
#   TRT_INCLUDE_DIR  folder with NvInfer.h; plugins are skipped when there is none. TRT_VARIANT is v2
#                    (IPluginV2DynamicExt) for NV_TENSORRT_MAJOR < 10, v3 (IPluginV3) for 10 and later.
#   TRT_LIB_DIR      folder with libnvinfer.so.<NV_TENSORRT_MAJOR> of those headers; plugins are skipped without it.
#   BUILD_DIR        output folder
#
# NO_PLUGIN says why no plugin can be built here; empty when one can. cudart is linked statically; a plugin needs
# libnvinfer.so.<major> by its soname: the process's own where TensorRT is loaded already.

ROOT := $(abspath $(HERE)/../..)
COMMON := $(ROOT)/plugins_src/common

CUDA_HOME ?= /usr/local/cuda
BUILD_DIR ?= $(ROOT)/build/plugins
TRT_INCLUDE_DIR ?= $(firstword $(patsubst %/NvInfer.h,%,$(wildcard \
	$(ROOT)/third_party/tensorrt-8.6/include/NvInfer.h /usr/include/x86_64-linux-gnu/NvInfer.h)))

NVCC := $(CUDA_HOME)/bin/nvcc
CXX ?= g++
# sm_90 machine code, plus compute_90 PTX so that later GPUs can JIT-compile it.
GENCODE ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
NVCCFLAGS ?= -O3 -std=c++17 $(GENCODE) -Xcompiler -fPIC,-fvisibility=hidden,-Wall
CXXFLAGS ?= -O2 -std=c++17 -fPIC -fvisibility=hidden -Wall -Wextra
PLUGIN_CXXFLAGS = $(CXXFLAGS) -I$(COMMON) -isystem $(TRT_INCLUDE_DIR) -isystem $(CUDA_HOME)/include
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lpthread
# Static archives stay private to each shared library.
SHARED_LDFLAGS := -shared -Wl,--exclude-libs,ALL -Wl,--no-undefined

ifneq ($(wildcard $(TRT_INCLUDE_DIR)/NvInfer.h),)
TRT_MAJOR := $(shell printf 'NV_TENSORRT_MAJOR\n' | $(CXX) -E -P -x c++ -include $(TRT_INCLUDE_DIR)/NvInferVersion.h - | tail -n 1)
TRT_VARIANT := $(if $(filter 8 9,$(TRT_MAJOR)),v2,v3)
LIBNVINFER := libnvinfer.so.$(TRT_MAJOR)
# -l: takes the file by name; a plugin's DT_NEEDED is the soname (libnvinfer.so.<major>), not a path.
TRT_LIBS = -L$(TRT_LIB_DIR) -l:$(LIBNVINFER)
TRT_LIB_DIR ?= $(firstword $(patsubst %/$(LIBNVINFER),%,$(wildcard \
	/opt/trt/lib/$(LIBNVINFER) /opt/trt86/lib/$(LIBNVINFER) /usr/lib/x86_64-linux-gnu/$(LIBNVINFER))))
ifeq ($(wildcard $(TRT_LIB_DIR)/$(LIBNVINFER)),)
NO_PLUGIN := no $(LIBNVINFER) under TRT_LIB_DIR='$(TRT_LIB_DIR)'
endif
else
NO_PLUGIN := no NvInfer.h under TRT_INCLUDE_DIR='$(TRT_INCLUDE_DIR)'
endif

.DEFAULT_GOAL := all

$(BUILD_DIR):
	mkdir -p $@
