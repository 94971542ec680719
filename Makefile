# metakern: `make test` and `make bench` do all set-up on a fresh machine.
#   make test                 build (C++ and, where nvcc is found, CUDA), then run the test suite
#   make bench                build, then `metakern bench` (table, JSON and PNG under bench-out/)
#   make bench-quick          the same with --quick (about 105 s on 2 cores, plus about 45 s for the MAML case and
#                             about 100 s for the recurrent agents' cases, whose plain-PyTorch baselines take 8 s a call)
#   make asv                  run the asv suite against the installed build (bench/asv.conf.json)
#   make peers                install the environment benchmark peers (minigrid, gymnax on JAX CPU)
#   make lint                 ruff
#   make soak                 randomized compiled-backend-vs-reference soak (SOAK_MINUTES)
#   make triton-aot           compile every Triton kernel launch for sm_80, sm_90 and sm_100, all cases (no GPU)
# Knobs (make VAR=value): PYTHON, VENV, TORCH_VERSION / TORCH_SPEC, METAKERN_CUDA (AUTO|ON|OFF),
# METAKERN_CUDA_ARCHS, PYTEST_ARGS, BENCH_ARGS, BUILD_JOBS.

PYTHON        ?= python3
VENV          ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_SPEC    ?= torch==$(TORCH_VERSION)
METAKERN_CUDA ?= AUTO
METAKERN_CUDA_ARCHS ?= 80;90
BUILD_JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
PYTEST_ARGS   ?=
BENCH_ARGS    ?=
SOAK_MINUTES  ?= 5

PY  := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP_DEPS := $(VENV)/.deps-$(TORCH_VERSION)
STAMP_BUILD := $(VENV)/.metakern-built
SOURCES := $(shell find cpp bindings -type f) CMakeLists.txt pyproject.toml

# nvcc is often installed outside PATH (/usr/local/cuda/bin); CMake finds it through CUDACXX.
CUDACXX ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
export CUDACXX METAKERN_CUDA METAKERN_CUDA_ARCHS
export CMAKE_BUILD_PARALLEL_LEVEL := $(BUILD_JOBS)

.PHONY: test bench bench-quick asv lint install clean info peers gpu-wheels soak triton-aot

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is pinned and installed first: an unpinned torch would pull multi-gigabyte CUDA wheels onto
# CPU-only machines. Later installs see the requirement satisfied and leave it alone.
$(STAMP_DEPS): | $(PY)
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q "scikit-build-core>=0.10" "pybind11>=2.12" ninja
	touch $@

$(STAMP_BUILD): $(STAMP_DEPS) $(SOURCES)
	$(PIP) install -q --no-build-isolation -e ".[dev]"
	touch $@

install: $(STAMP_BUILD)

info: install
	$(VENV)/bin/metakern info

test: install
	$(VENV)/bin/metakern info
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Randomized soak: every compiled backend against its reference on new random configurations
# (tests/soak.py), for SOAK_MINUTES minutes; exit 1 on any mismatch.
soak: install
	$(PY) tests/soak.py --minutes $(SOAK_MINUTES)

# Every Triton kernel launch the ops make, compiled ahead of time for sm_80, sm_90 and sm_100 with their
# registers and spills (tests/triton_aot.py; `make test` runs the default cases for sm_90).
triton-aot: install
	$(PY) tests/triton_aot.py --full --arch 80 --arch 90 --arch 100

bench: install
	$(VENV)/bin/metakern bench --json bench-out/bench.json --plot bench-out/bench.png $(BENCH_ARGS)

bench-quick: install
	$(VENV)/bin/metakern bench --quick --json bench-out/bench-quick.json --plot bench-out/bench-quick.png $(BENCH_ARGS)

asv: install
	cd bench && ../$(VENV)/bin/asv machine --yes && \
	  ../$(VENV)/bin/asv run --python=same --set-commit-hash $$(git rev-parse HEAD) $(ASV_ARGS)

# Wheels a lent GPU machine lacks (no network there; its python3 is 3.12 and already holds torch,
# triton, pytest, hypothesis, jax, flax and chex): gymnasium (a dependency of metakern.envs) and
# gymnax (the JAX peer of the environment benchmarks, on the GPU there). Carry .whl to the device;
# bench/gpu_session.sh installs them there with --no-deps (the MuJoCo tests skip without mujoco).
GPU_WHEELS = gymnasium==1.4.0 farama-notifications gymnax==1.0.1
gpu-wheels: | $(PY)
	rm -rf .whl
	$(PIP) download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform any --no-deps -d .whl $(GPU_WHEELS)

# gymnax declares gymnasium<1.4 (it only uses its spaces), so it goes in without its dependencies.
peers: install
	$(PIP) install -q "minigrid>=3.0" "jax[cpu]>=0.4.30" flax six
	$(PIP) install -q --no-deps "gymnax==1.0.1"

lint: install
	$(VENV)/bin/ruff check engine kernels tests bench

clean:
	rm -rf build bench-out profile-out bench/.asv $(STAMP_BUILD)
