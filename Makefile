# slicemesh: `make demo` and `make test` do all set-up on a fresh Debian machine (as root).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# runc and busybox-static: container slivers; iproute2, e2fsprogs, util-linux: their NIC, disk
# and user namespaces (unshare); nftables: the node bridge's firewall (what slivers may reach on
# the host); qemu-system-x86, cpio, gcc and libc6-dev (the static guest agent): VM guests;
# python3-venv: the virtualenv.
DEB_PACKAGES := python3 python3-venv python3-pip runc busybox-static iputils-ping traceroute iproute2 e2fsprogs util-linux \
	mount procps psmisc kmod nftables cpio qemu-system-x86 gcc libc6-dev ca-certificates
STAMP := $(VENV)/.installed

setup: debs $(STAMP) images bytecode

.PHONY: setup debs bytecode demo test test-fast test-resilience lint bench clean

debs:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Bytecode for every module, as pip writes it for an installed wheel: the checkout is installed
# editable, so without it each CLI command compiles its modules again wherever Python may not
# write them (PYTHONDONTWRITEBYTECODE, a checkout the user cannot write). Up-to-date files are skipped.
bytecode: $(STAMP)
	$(PY) -m compileall -q -j0 slices controller node_agent benchmarks > /dev/null

# Image bases; for VMs also Debian's cloud kernel (apt-get download + dpkg -x, not installed),
# the guest agent and the base initramfs (node_agent/backends/qemu/assets.py).
images: $(STAMP)
	@if [ -f node_agent/images.py ]; then $(PY) -m node_agent.images build; fi
	$(PY) -m node_agent.backends.qemu build

demo: setup
	$(VENV)/bin/slicemesh demo

test: setup
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q

# Every fault point, agent kills on both backends and 60 s of load from 200 clients (docs/reliability.md).
test-resilience: $(STAMP)
	$(PY) -m pytest -q -m 'long or not long' tests/resilience

test-fast: $(STAMP)
	$(PY) -m pytest -q tests/unit

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
