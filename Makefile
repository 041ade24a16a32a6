# vfudissect: the two commands a fresh clone needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv tshark lua fixtures bench clean

$(STAMP): pyproject.toml vfudissect/_fastpath.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# tshark comes from Debian's packages; install it when missing and we can,
# and fail loudly when we cannot (the plugin tests are not optional).
tshark:
	@if ! command -v tshark >/dev/null 2>&1; then \
	  echo "tshark missing: installing Debian's package"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark >/dev/null || \
	  { echo "ERROR: could not install tshark (apt-get failed); the Wireshark plugin tests need it" >&2; exit 1; }; \
	fi
	@tshark --version | head -1

# emulated device + QEMU-shaped client through the recording proxy; writes captures/demo*.pcapng
demo: $(STAMP)
	$(VENV)/bin/vfudissect demo

test: $(STAMP) tshark
	$(PY) -m pytest -q

lua: $(STAMP)
	$(VENV)/bin/vfudissect lua -o plugins/vfio_user.lua

fixtures: $(STAMP)
	$(PY) tools/make_fixtures.py

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
