# Each target installs what it needs first (scripts/setup.sh is idempotent; run as root on Debian).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo ha-demo test unit integration bench lint clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m mininet_topos.demo examples/edge-cloud.yaml

ha-demo: setup
	$(PY) -m mininet_topos.ha_demo examples/edge-cloud.yaml

test: setup
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest tests -q -m "not integration" $(PYTEST_ARGS)

integration: setup
	$(PY) -m pytest tests -q -m integration $(PYTEST_ARGS)

BENCHMARKS := routes route_hysteresis route_batches failover packet_in placement_api placement_quality pki_issue pki_rotation xds_fanout mesh_paths xds_rebuild latency_rebuild migration gitops service_paths dashboard bandwidth etcd_client codec ha_failover scale

# The same install as setup's (the editable install's mode included), with the benchmarks' extras.
bench:
	@EDGECTL_EXTRAS=dev,bench bash scripts/setup.sh
	@set -e; for b in $(BENCHMARKS); do echo "== benchmarks/$$b.py"; $(PY) benchmarks/$$b.py; done
	@echo "== benchmarks/xds_fanout.py --mtls"; $(PY) benchmarks/xds_fanout.py --mtls
	@echo "== benchmarks/placement_throughput.py --mtls"; $(PY) benchmarks/placement_throughput.py --mtls

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
