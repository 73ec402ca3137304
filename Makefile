# Two commands for a newcomer: `make demo` and `make test`. Both create what they need first.
PYTHON ?= python3
VENV ?= .venv
LAVA_VENV ?= .venv-lava
PY := $(VENV)/bin/python
# torch is not pinned by the package; this is what the environment installs when torch is missing
# (2.13.0 is the CPU wheel shipped on this project's machines). Override: make TORCH_SPEC=torch test
TORCH_SPEC ?= torch==2.13.0
PIP := $(PY) -m pip install -q --disable-pip-version-check
DEMO_OUT ?= runs/demo

.PHONY: env lava-env chromium demo test test-portable bench clean

env: $(VENV)/.snnkit-complete lava-env

$(VENV)/.snnkit-complete: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import torch' 2>/dev/null || $(PIP) "$(TORCH_SPEC)" 2>&1 | grep -v '^WARNING: Location' || true
	@$(PIP) -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' || true
	@# norse/torchattacks/spikingjelly declare torchvision/torchaudio, which snnkit never calls: skip them.
	@# neurobench (the independent oracle for operation counts) would pull torchaudio and snnTorch's pins.
	@$(PIP) --no-deps "norse==1.1.0" "torchattacks==3.5.1" "spikingjelly==2.0.0" "neurobench==2.3.0" 2>&1 | grep -v '^WARNING: Location' || true
	@# tonic (event data sets) declares librosa and expelliarmus, which the readers snnkit calls never import;
	@# importRosbag is imported by `import tonic`, aedat by its CIFAR10-DVS reader.
	@$(PIP) --no-deps "tonic==1.7.0" "importRosbag==1.0.4" "aedat==2.3.0" 2>&1 | grep -v '^WARNING: Location' || true
	@$(PY) -c 'import torch, nir, norse.torch, snntorch, torchattacks, neurobench.metrics, tonic.transforms, aedat, snnkit' && touch $@
	@echo "snnkit: environment ready in $(VENV)"

# The Lava environment is made by the package's own command (installed users run `snn-lava-env`); without a
# Python 3.10 it says so in one line and only the lava target is unavailable.
lava-env: $(VENV)/.snnkit-complete
	@$(VENV)/bin/snn-lava-env --optional $(LAVA_VENV)

demo: env
	@$(PY) scripts/demo.py --out $(DEMO_OUT)

test: env chromium
	@$(PY) -m pytest -q -ra tests

# The browser test opens snn-report's HTML in headless Chromium (DevTools protocol, no WebDriver needed). Debian's
# chromium is installed where it is missing and apt-get may run (root, or password-less sudo); elsewhere that
# test skips and says why. SNNKIT_CHROMIUM names another Chromium/Chrome binary.
chromium:
	@[ -n "$$SNNKIT_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || { command -v apt-get >/dev/null 2>&1 && if [ "$$(id -u)" = 0 ]; then s=; else s="sudo -n"; fi \
	       && { DEBIAN_FRONTEND=noninteractive $$s apt-get install -y -qq chromium >/dev/null 2>&1 \
	            || { $$s apt-get update -qq >/dev/null 2>&1 \
	                 && DEBIAN_FRONTEND=noninteractive $$s apt-get install -y -qq chromium >/dev/null 2>&1; }; } \
	       && echo "snnkit: installed Debian's chromium for the browser test"; } \
	  || echo "snnkit: no Chromium, and apt-get could not install it here: the browser test will skip"

# The suite again on another floating-point path: no compiled kernels (a machine without a C compiler) and
# torch's, MKL's and oneDNN's generic instruction sets (what another CPU family would run). CI runs both; left to
# `make test`: the full-length training runs (marked slow, several times slower on generic kernels), the Lava
# runs (marked lava: integer arithmetic in another process, the same on any CPU), the examples (marked
# examples: the scripts in examples/ with --quick, whose parts the other tests cover) and the tests that check
# no computed number (marked nonnumeric: packaging, files and locks, error lines, the browser).
test-portable: env
	@SNNKIT_NATIVE=0 ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41 \
		$(PY) -m pytest -q -ra -m "not slow and not lava and not examples and not nonnumeric" tests

bench: env
	@$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) $(LAVA_VENV) runs
