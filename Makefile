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

.PHONY: test demo setup system-deps clean bench

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

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip $(QUIET_PIP)
	$(PIP) install -q torch==$(TORCH_VERSION) $(QUIET_PIP)
	$(PIP) install -q -e '.[test]' $(QUIET_PIP)
	touch $(STAMP)

setup: system-deps $(STAMP)

test: setup
	xvfb-run -a -s "-screen 0 1600x1200x24" $(PY) -m pytest -p no:xvfb tests

demo: setup
	@if [ -n "$$DISPLAY" ]; then \
		$(PY) -m napari_medseg.widgets.demo; \
	else \
		echo "no display: running the demo headless under Xvfb, outputs in demo-output/"; \
		xvfb-run -a -s "-screen 0 1600x1200x24" $(PY) -m napari_medseg.widgets.demo --headless --out demo-output; \
	fi

bench: setup
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist demo-output test-artifacts .pytest_cache
