# milterguard: build, test, demo and bench on Debian 12.
#   make deps    system packages for the tests (apt; skipped when all present)
#   make deps-demo  only what the demo uses (no Postfix, no Chromium)
#   make venv    .venv with milterguard installed editable, plus test and lint tools
#   make lint    ruff over the package, tests and benches (rules in pyproject.toml)
#   make typecheck  mypy, strict on the package (settings in pyproject.toml)
#   make unit    the unit tier: no root, Postfix, rbldnsd, nft or network
#   make test    the whole suite: the unit tier and the e2e tier (real
#                Postfix, rbldnsd, nftables in namespaces, Chromium)
#   make demo    run the daemon on the shipped defaults, replay samples/ through it
#   make bench   every bench/bench_*.py in turn
#   make fuzz [FUZZ_SECONDS=300]   property-based fuzzing (tests/fuzz), random examples
#   make soak [SOAK_MINUTES=10 SOAK_SESSIONS=50]   the daemon under load through real
#                Postfix, then kill -9 and SIGTERM under load (bench/soak.py; not in make test)
#   make eval CORPUS=DIR   rules, classifier (k-fold cross-validated) and both on a labelled corpus
#                          (EVAL_EXCLUDE: folders left out, default mime_edge, the parser fixtures)

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STATE := $(CURDIR)/state
DEMO_SOCKET := unix:$(STATE)/milterguard.sock
EVAL_EXCLUDE ?= mime_edge

.PHONY: all deps deps-demo venv lint typecheck unit test demo bench eval fuzz soak clean

all: test

deps:
	bash scripts/install-deps.sh test

deps-demo:
	bash scripts/install-deps.sh demo

# Re-install only when the package metadata changed.
venv: $(VENV)/.installed

# Needs only the demo's packages (a C compiler and libmilter for pymilter).
$(VENV)/.installed: pyproject.toml | deps-demo
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[test,lint]'
	touch $@

lint: venv
	$(VPY) -m ruff check .

typecheck: venv
	$(VPY) -m mypy

unit: venv
	$(VPY) -m pytest -q -m 'not e2e' tests/unit

test: deps venv
	$(VPY) -m pytest

# Rounds of every test in tests/fuzz with fresh random examples
# (HYPOTHESIS_PROFILE=fuzz, FUZZ_EXAMPLES per test and round) until
# FUZZ_SECONDS have passed; a round only starts before that, so the run is
# bounded by FUZZ_SECONDS plus one round (a test that runs over 900 s is a
# hang and fails). The first failure stops it; its
# example is kept in .hypothesis/ and replayed first next time. `make test`
# runs the same tests on a short fixed set of examples.
FUZZ_SECONDS ?= 300
FUZZ_EXAMPLES ?= 1500
fuzz: deps venv
	@set -e; end=$$(( $$(date +%s) + $(FUZZ_SECONDS) )); round=0; \
	while [ $$(date +%s) -lt $$end ]; do \
	    round=$$((round + 1)); echo "== fuzz round $$round"; \
	    HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
	        $(VPY) -m pytest -q -p no:cacheprovider --timeout=900 tests/fuzz; \
	done; echo "fuzz: $$round rounds, no failure"

# Reads ../shared/corpus when it is there (in place), else samples/ only.
SOAK_MINUTES ?= 10
SOAK_SESSIONS ?= 50
soak: deps venv
	$(VPY) bench/soak.py --minutes $(SOAK_MINUTES) --sessions $(SOAK_SESSIONS)

# The daemon runs in the background while replay talks to it; it is stopped
# whatever replay's outcome, and replay's exit status is make's.
demo: deps-demo venv
	@mkdir -p $(STATE)
	@rm -f $(STATE)/milterguard.sock
	@set -u; \
	$(VPY) -m milterguard run -c samples/demo.yaml --state-dir $(STATE) \
	    --socket $(DEMO_SOCKET) 2> $(STATE)/demo-daemon.log & pid=$$!; \
	trap 'kill -TERM $$pid 2>/dev/null; wait $$pid 2>/dev/null' EXIT; \
	for i in $$(seq 1 100); do \
	    [ -S $(STATE)/milterguard.sock ] && break; \
	    kill -0 $$pid 2>/dev/null || { cat $(STATE)/demo-daemon.log; exit 1; }; \
	    sleep 0.1; \
	done; \
	[ -S $(STATE)/milterguard.sock ] || { echo "daemon did not start"; cat $(STATE)/demo-daemon.log; exit 1; }; \
	status=0; \
	$(VPY) -m milterguard replay --socket $(DEMO_SOCKET) \
	    --expect samples/expected.yaml samples/ || status=$$?; \
	echo "daemon log: $(STATE)/demo-daemon.log"; \
	exit $$status

bench: deps venv
	@set -e; for script in bench/bench_*.py; do \
	    echo "== $$script"; \
	    $(VPY) $$script; \
	done

eval: venv
	@test -n "$(CORPUS)" || { echo "usage: make eval CORPUS=DIR"; exit 2; }
	$(VPY) bench/eval_corpus.py $(CORPUS) $(foreach d,$(EVAL_EXCLUDE),--exclude $(d))

clean:
	rm -rf $(VENV) $(STATE) .pytest_cache build *.egg-info
