# ridestream's two commands — everything else is set up on the way, on a fresh machine:
#   make run    the main job: local Kafka broker, topics, backend and services, live
#   make test   the test suite (a real Kafka broker, started once per session)
# Needs python3 (3.11+), and for the local broker java (17+) and mvn; KAFKA_BOOTSTRAP_SERVERS
# points everything at an existing cluster instead.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test install browser monitoring broker-jars clean

run: install
	$(BIN)/ridestream run

test: install browser monitoring
	$(BIN)/pytest

# headless Chromium renders the dashboard in a test; installed from Debian where we are root
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "note: chromium is not installed; the dashboard screenshot test will be skipped"

# prometheus and promtool run the alert rule tests and the monitoring integration test; from Debian where root
monitoring:
	@command -v promtool >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; } \
	  || echo "note: prometheus is not installed; the promtool and Prometheus tests will be skipped"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

broker-jars: install
	$(BIN)/ridestream broker fetch

clean:
	-$(BIN)/ridestream broker stop
	rm -rf $(VENV) broker/lib .ridestream test-output
