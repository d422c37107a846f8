# ridestream's two commands — everything else is set up on the way, on a fresh machine:
#   make run    the main job: local Kafka broker, topics, backend and services, live
#   make test   the test suite (a real Kafka broker, started once per session)
# Needs python3 (3.11+), and for the local broker java (17+) and mvn; KAFKA_BOOTSTRAP_SERVERS
# points everything at an existing cluster instead.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test install browser postgres kubeconform monitoring broker-jars clean

run: install
	$(BIN)/ridestream run

test: install browser postgres kubeconform monitoring
	$(BIN)/pytest -n 2 --dist loadfile

# headless Chromium renders the dashboard and drives the rider page (chromedriver) in tests;
# installed from Debian where we are root
browser:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] \
	  && command -v apt-get >/dev/null && apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	  || echo "note: chromium or chromium-driver is not installed; the browser tests will be skipped"

# a real PostgreSQL server for the batch job's tests (each test session starts its own cluster)
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } \
	  || echo "note: PostgreSQL is not installed; the batch job's PostgreSQL tests will be skipped"

# prometheus and promtool run the alert rule tests and the monitoring integration test; from Debian where root
monitoring:
	@command -v promtool >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; } \
	  || echo "note: prometheus is not installed; the promtool and Prometheus tests will be skipped"

install: $(VENV)/.installed

# kubeconform validates deploy/k8s offline (tests/unit/test_k8s.py), built from the Go module
# proxy into the virtualenv's bin; without Go those tests are skipped with the reason
KUBECONFORM_VERSION ?= v0.8.0
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
kubeconform: $(BIN)/kubeconform

$(BIN)/kubeconform: | $(VENV)/.installed
	@if [ -x "$(GO)" ]; then GOBIN=$(abspath $(BIN)) $(GO) install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION) \
	  || echo "note: could not build kubeconform; the manifest validation tests will be skipped"; \
	else echo "note: no Go toolchain; the kubeconform tests will be skipped"; fi

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

broker-jars: install
	$(BIN)/ridestream broker fetch

clean:
	-$(BIN)/ridestream broker stop
	rm -rf $(VENV) broker/lib .ridestream test-output
