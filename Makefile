# Two entry points: `make demo` (the main job on the embedded model) and `make test`; `make lab`
# opens the notebooks in JupyterLab. Each creates .venv on first use, installing the CPU torch pin
# before anything else so no dependency pulls a multi-GB CUDA build. The interop extra builds
# llama.cpp from source (CPU only, the library alone): several minutes on 2 cores the first time,
# then pip's wheel cache serves it. steering-vectors and repeng come without their dependency caps
# (see pyproject.toml).
LLAMA_CPP_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_BLAS=OFF
VENV := .venv
PY := $(VENV)/bin/python
OUT ?= runs/demo

$(VENV)/.installed: pyproject.toml setup.py Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" $(PY) -m pip install --quiet -e ".[dev,notebook,interop]"
	$(PY) -m pip install --quiet --no-deps steering-vectors==0.12.2 repeng==0.4.0
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/steerscope info
	$(VENV)/bin/steerscope run steer-demo --out $(OUT)

# `make test` runs in timed phases, so a slow step shows: install (once), the embedded model's build
# (dequantising the GGUF into the cache, once), the organisms (their committed weights verified;
# nothing is trained) and the tests; a table of the phases' wall times ends the output.
ORGANISMS := organism:tom organism:sources organism:length organism:reasoning
test: browser
	@python3 .ci/phases.py \
		"install=$(MAKE) --no-print-directory $(VENV)/.installed" \
		"model build=HF_HUB_OFFLINE=1 $(VENV)/bin/steerscope info" \
		"organisms=HF_HUB_OFFLINE=1 $(VENV)/bin/steerscope build $(ORGANISMS)" \
		"tests=HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=30"

# tests/test_report_browser.py opens reports in headless Chromium: installed here with apt where
# missing (as root or through sudo); if that fails, only that test fails, saying so. `demo` needs none.
browser:
	@command -v chromium >/dev/null || { \
		echo "chromium not found: installing it with apt-get for the headless browser test"; \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		{ $$sudo apt-get update -qq && $$sudo apt-get install -y -qq chromium >/dev/null; } \
			|| echo "could not install chromium (apt-get failed): tests/test_report_browser.py will fail"; }

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab notebooks/

.PHONY: demo test lab browser
