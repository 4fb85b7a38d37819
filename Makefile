# Two entry points: `make demo` and `make test`. Both set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION := 2.13.0
APT_PACKAGES := xvfb xauth libgl1 libgl1-mesa-dri libglib2.0-0 libfontconfig1 libdbus-1-3 \
	libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-render-util0 \
	libxcb-xinerama0 libxcb-shape0 libegl1 libxcb-cursor0
STAMP := $(VENV)/.installed
XVFB := xvfb-run -a -s "-screen 0 1600x1200x24"

# The lock: every package but torch and the project, exact versions with their hashes, for
# Linux x86_64 CPython 3.11. `make lock` writes it from pyproject.toml (see README).
LOCK := requirements/lock-linux-py311.txt
UV_LOCK := requirements/uv.txt
UV := $(VENV)/bin/uv
LOCK_EXTRAS := napari test bench cohort nnunet monai
LOCK_PYTHON := 3.11
LOCK_PLATFORM := x86_64-manylinux_2_28
LOCK_ARGS ?=
TOOLS_VENV := .venv-tools
UV_VERSION := 0.13.9

# The second environment: the viewer tests again with PyQt5 and the standard torch wheel of
# the package index (on Linux the GPU build, which brings triton; it runs on a CPU too).
COMPAT_VENV := .venv-compat
COMPAT_PY := $(COMPAT_VENV)/bin/python
COMPAT_STAMP := $(COMPAT_VENV)/.installed
COMPAT_TORCH := torch==$(TORCH_VERSION),!=$(TORCH_VERSION)+cpu
COMPAT_CONSTRAINTS := build/compat-constraints.txt

.PHONY: test test-main test-compat demo setup setup-compat system-deps clean bench lock

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = "0" ]; then \
			echo "installing Debian packages:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "warning: missing Debian packages (run as root to install):$$missing" >&2; \
		fi; \
	fi

# pip's notes about unused local index folders are noise; failures still stop make.
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither" || true; }; test $${PIPESTATUS[0]} -eq 0

# torch first, the CPU build (pip finds it through its configuration: a wheel folder or
# PyTorch's CPU index); then uv (pinned and hashed) installs the lock and the project. No
# resolution at install time (--no-deps); `pip check` proves the set is complete. Bytecode
# is compiled at install, as pip does (uv does not unless asked): where Python may not write
# it (read-only environments, PYTHONDONTWRITEBYTECODE) every `medseg` run would compile
# about 300 modules again, half a second each time.
$(STAMP): pyproject.toml $(LOCK) $(UV_LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --no-deps torch==$(TORCH_VERSION) $(QUIET_PIP)
	@$(PY) -c "from importlib.metadata import version; v = version('torch'); '+cpu' in v or print(f'warning: torch {v} is not the CPU build (several GB); give pip the CPU wheel index or folder', flush=True)"
	$(PIP) install -q --no-deps --require-hashes -r $(UV_LOCK) $(QUIET_PIP)
	$(UV) pip install -q --python $(PY) --no-deps --require-hashes --compile-bytecode -r $(LOCK)
	$(UV) pip install -q --python $(PY) --no-deps --no-build-isolation -e .
	$(PY) -m compileall -q -j 0 napari_medseg
	$(UV) pip check -q --python $(PY) || { echo "$(LOCK) does not match pyproject.toml: run 'make lock'" >&2; exit 1; }
	touch $(STAMP)

setup: system-deps $(STAMP)

# The main suite, then the viewer tests once more in the second environment (CUDA torch
# with triton, PyQt5): with uv's cache warm that adds under 3 minutes (see README, Install).
test: test-main test-compat

test-main: setup
	QT_API=pyqt6 PYTEST_QT_API=pyqt6 $(XVFB) $(PY) -m pytest -p no:xvfb tests

# The lock's versions as plain constraints (no hashes: this set differs, torch brings its own).
$(COMPAT_CONSTRAINTS): $(LOCK)
	mkdir -p $(dir $@)
	sed -n 's/^\([A-Za-z0-9][^ ]*==[^ ]*\).*/\1/p' $(LOCK) > $@

# uv (from .venv) installs it from the package index: several GB of wheels that its cache
# keeps between runs and links into the environment (pip's cache stays empty when the
# index's responses carry no caching headers, and pip would download them every time).
$(COMPAT_STAMP): $(STAMP) $(COMPAT_CONSTRAINTS)
	test -x $(COMPAT_PY) || $(PYTHON) -m venv --without-pip $(COMPAT_VENV)
	$(UV) pip install -q --python $(COMPAT_PY) -c $(COMPAT_CONSTRAINTS) '$(COMPAT_TORCH)' -e '.[pyqt5,test]'
	$(COMPAT_PY) -c "import torch, triton, PyQt5.QtCore as q; print('second environment: torch', torch.__version__, 'triton', triton.__version__, 'PyQt5', q.PYQT_VERSION_STR)"
	touch $(COMPAT_STAMP)

setup-compat: setup $(COMPAT_STAMP)

test-compat: setup-compat
	QT_API=pyqt5 PYTEST_QT_API=pyqt5 MEDSEG_TEST_ARTIFACTS=test-artifacts/pyqt5 \
		$(XVFB) $(COMPAT_PY) -m pytest -p no:xvfb tests/gui

demo: setup
	@if [ -n "$$DISPLAY" ]; then \
		QT_API=pyqt6 $(PY) scripts/demo.py; \
	else \
		echo "no display: running the demo headless under Xvfb, outputs in demo-output/"; \
		QT_API=pyqt6 $(XVFB) $(PY) scripts/demo.py --headless --out demo-output; \
	fi

bench: setup
	for b in bench/*.py; do $(PY) $$b || exit 1; done

# Re-resolve the lock from pyproject.toml: newest versions within its ranges, resolved
# against the CPU torch wheel that `setup` installs (so none of the GPU build's packages).
lock:
	test -x $(TOOLS_VENV)/bin/uv || { $(PYTHON) -m venv $(TOOLS_VENV) && $(TOOLS_VENV)/bin/pip install -q uv==$(UV_VERSION) $(QUIET_PIP); }
	echo "uv==$(UV_VERSION)" | $(TOOLS_VENV)/bin/uv pip compile - --generate-hashes \
		--custom-compile-command "make lock" --quiet -o $(UV_LOCK)
	rm -rf build/lock-torch && mkdir -p build/lock-torch
	$(TOOLS_VENV)/bin/pip download -q --no-deps -d build/lock-torch torch==$(TORCH_VERSION) $(QUIET_PIP)
	@ls build/lock-torch/torch-$(TORCH_VERSION)+cpu-*.whl >/dev/null 2>&1 || { echo "pip found no CPU build of torch $(TORCH_VERSION)" >&2; exit 1; }
	echo "torch==$(TORCH_VERSION)+cpu" > build/lock-torch/constraints.txt
	$(TOOLS_VENV)/bin/uv pip compile pyproject.toml requirements/build-tools.in $(addprefix --extra ,$(LOCK_EXTRAS)) \
		--python-version $(LOCK_PYTHON) --python-platform $(LOCK_PLATFORM) --generate-hashes \
		--find-links build/lock-torch --constraint build/lock-torch/constraints.txt \
		--no-emit-package torch --custom-compile-command "make lock" --quiet $(LOCK_ARGS) -o $(LOCK)

clean:
	rm -rf $(VENV) $(COMPAT_VENV) build dist demo-output test-artifacts .pytest_cache
