# Thin wrappers: every target is a script that also works without make.
.PHONY: help run test ci bench screenshots clean

help:
	@echo "make run     install into .venv and start rst-triage (ARGS='analyze x.pcap')"
	@echo "make test    install test tools, run ruff, mypy and pytest (root: lab tests too)"
	@echo "make ci      what CI runs: make test with RST_TRIAGE_REQUIRE_LAB=1"
	@echo "make bench   time rst-triage analyze against tshark on a 1M-packet capture"
	@echo "make screenshots  regenerate the SVG screenshots in screenshots/"
	@echo "make clean   remove .venv, caches and generated benchmark captures"

run:
	./scripts/run $(ARGS)

test:
	./scripts/test $(ARGS)

ci:
	./.ci/run $(ARGS)

bench:
	./scripts/bench $(ARGS)

screenshots:
	./scripts/screenshots

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache bench/out
