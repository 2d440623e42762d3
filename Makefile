# The two set-up commands of the README, and what CI runs (.ci/run calls `make test`).
# Both install everything they need on a fresh Debian machine (run as root, or with sudo).

PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# gcc and libc6-dev: the install compiles the hot paths with mypyc (docs/native.md)
DEBIAN_PACKAGES := tshark tcpreplay iproute2 bridge-utils procps gcc libc6-dev

.PHONY: demo test system-packages install install-test lint

## Analyse the shipped demo capture with the embedded defaults (no Elasticsearch needed).
demo: install
	sentinel analyze lab/pcaps/demo.pcap --config lab/sites/hospital.yaml --out sentinel-out/demo

## The whole test suite, with the real tshark, Elasticsearch and network namespaces.
test: system-packages install-test
	ruff check .
	sentinel rules check --strict signatures/
	$(PYTHON) -m pytest -q tests

system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

install:
	$(PIP) install -q .

# Editable: the tests import the checkout's packages (the top-level layout maps detectors/,
# lab/, signatures/ and playbooks/ into sentinel.*); tests/test_packaging.py checks the wheel.
install-test:
	$(PIP) install -q -e ".[test]"

lint:
	ruff check . && ruff format --check .
