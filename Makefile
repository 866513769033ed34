# gmemlab. Two commands set everything up on a fresh Debian 12 machine:
#   make lab-test   the main job: build, boot, run the suites, report
#   make check      the lab's own tests
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LAB := $(BIN)/lab
KERNEL ?=
CONFIG ?=
SUITES ?=
MATRIX ?= nightly
# KERNEL may be a path with spaces, commas or quotes: the recipes read it (and CONFIG,
# SUITES) from their environment and quote it, so make never splits or re-parses it.
export KERNEL CONFIG SUITES
LAB_ARGS := $${KERNEL:+--kernel "$$KERNEL"} $${CONFIG:+--config "$$CONFIG"}
DEPS_STAMP := .deps-installed

.PHONY: help venv deps lab-test check lint ci-lint unit guest-host integration scenarios gitlab-ci-local faults faults-core build image boot nightly bench clean

help:
	@echo "make lab-test [KERNEL=mainline] [CONFIG=lab]   build, boot, test, report"
	@echo "make check                                     lint + unit + guest suite on this host + integration"
	@echo "make faults                                    fault injection (interrupts, paused VM, QEMU aborts, full disks)"
	@echo "make build | image | boot | nightly | bench | deps | venv | ci-lint"

$(VENV)/.stamp: pyproject.toml | $(DEPS_STAMP)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.stamp

# The Debian packages (QEMU 10.0 from backports, build tools, mmdebstrap); uses sudo
# when not root. Re-runs when ci/deps.sh changes; the venv needs python3-venv from it.
$(DEPS_STAMP): ci/deps.sh ci/apt-mirror.sh
	bash ci/deps.sh
	touch $@

deps: $(DEPS_STAMP)

lab-test: $(DEPS_STAMP) venv
	$(LAB) run $(LAB_ARGS) $${SUITES:+--suites "$$SUITES"}

build: $(DEPS_STAMP) venv
	$(LAB) build $(LAB_ARGS)

image: $(DEPS_STAMP) venv
	$(LAB) image

boot: $(DEPS_STAMP) venv
	$(LAB) boot $(LAB_ARGS)

nightly: $(DEPS_STAMP) venv
	$(LAB) matrix $(MATRIX)

check: lint unit guest-host integration faults-core

lint: venv ci-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The CI pipelines' own checks: jactionlint (actionlint's checks, plus security and
# policy rules; settings in ci/jactionlint.yaml) on the GitHub workflow, with shellcheck
# on its run: steps, and shellcheck on the scripts both pipelines run. The GitLab
# pipeline's structure is checked by tests/unit/test_ci.py, its run by the CI scenario.
ci-lint: venv
	$(BIN)/jactionlint --config-file ci/jactionlint.yaml --shellcheck=$(BIN)/shellcheck \
		--pyflakes= ci/github-actions.yml
	$(BIN)/shellcheck -S warning ci/*.sh

# pytest exits 5 when it collected nothing: that fails the target, never passes.
unit: venv
	$(BIN)/pytest tests/unit -q

# The guest ioctl suite against this machine's own /dev/kvm, where there is one.
# Differences between this host's kernel and 7.3 semantics are strict expected
# failures listed per kernel in known_differences.json: reported, never hidden, and a
# listed test that starts passing fails the run.
guest-host: venv
	@if [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then \
		$(BIN)/python -m pytest tests/guest -q -rxs -p no:cacheprovider \
			--known-differences tests/guest/known_differences.json \
			--junitxml=results/guest-host.xml; \
	else echo "guest-host: no usable /dev/kvm here, the guest suite runs inside the lab VM only"; fi

# Real kernel build, real QEMU, real SSH: slow, uses the lab cache. The long scenario
# suites (marker `scenario`) stay out of make check: see `make scenarios`.
integration: $(DEPS_STAMP) venv
	$(BIN)/pytest tests/integration -v -m "slow and not scenario"

# Long scenario suites: fault injection, the host VM, series from mail, A/B, bisect,
# CI pipeline runs. Each boots many VMs and builds kernels; allow an hour or more.
scenarios: $(DEPS_STAMP) venv gitlab-ci-local
	$(BIN)/pytest tests/integration -v -m scenario

# gitlab-ci-local runs ci/gitlab-ci.yml on this machine for the CI pipeline scenario
# (tests/integration/test_ci_pipeline_integration.py), installed with npm into the venv
# (not globally). 4.73.0: the newest that starts on Node.js 20 (4.74 on uses Node 22's
# Set methods). Without npm the scenario is skipped and says why.
GCL_VERSION := 4.73.0
GCL_STAMP := $(VENV)/node/.gitlab-ci-local-$(GCL_VERSION)
gitlab-ci-local: $(GCL_STAMP)
$(GCL_STAMP): | $(VENV)/.stamp
	@if command -v npm >/dev/null; then \
		npm install --prefix $(VENV)/node --no-audit --no-fund --loglevel=error \
			gitlab-ci-local@$(GCL_VERSION) && touch $@; \
	else echo "gitlab-ci-local: no npm here (install Node.js and npm): its scenario is skipped"; fi

# The fault-injection scenarios alone (interrupts, hangs, paused VM, QEMU aborts, full
# disks, ...): about 6 minutes on 2 idle cores with the mainline build cached. The few
# marked `faults_core` (SIGTERM mid-suite, a paused VM, a QEMU abort retried, a full
# results disk: about 2 minutes) are also part of make check.
faults: $(DEPS_STAMP) venv
	$(BIN)/pytest tests/integration -v -m faults

faults-core: $(DEPS_STAMP) venv
	$(BIN)/pytest tests/integration -v -m faults_core

bench: $(DEPS_STAMP) venv
	$(BIN)/python bench/boot.py

clean:
	rm -rf $(VENV) results $(DEPS_STAMP)
