# One command for the demo, one for the tests; each installs what it needs.
#   make demo   - dev cluster + libcephfsd + several client processes at work
#   make test   - the whole suite against a real cluster and a real daemon
SHELL := /bin/bash
# Debian's python3: the cephfs binding (python3-cephfs) is built for it.
PYTHON ?= /usr/bin/python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all deps venv cluster cluster-stop demo test unit clean

all: test

deps:
	scripts/install-deps

$(STAMP): pyproject.toml | deps
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[test,tools]'
	touch $(STAMP)

venv: deps $(STAMP)

cluster: venv
	tools/ceph-dev-cluster start

cluster-stop:
	tools/ceph-dev-cluster stop

demo: venv
	$(VPY) tools/demo

test: venv
	$(VPY) -m pytest $(PYTEST_ARGS)

unit: venv
	$(VPY) -m pytest tests/unit $(PYTEST_ARGS)

clean: cluster-stop
	rm -rf $(VENV) build *.egg-info
