# codemode-mcp. The two commands of the README:
#   make run    set everything up and run the OAuth portal (embedded SQLite) serving the bundled servers
#               (portal.toml) on http://127.0.0.1:8000: /mcp/<name>, /sse/<name>, sign-in and consent
#   make test   set everything up (incl. test upstreams and Node 22 tools) and run every check
# `make stdio` / `make serve` run the plain engine (one spec, no OAuth) over stdio / streamable HTTP.
SHELL := /bin/bash
PY := .venv/bin/python
SPEC ?= specs/petstore3-openapi.yaml
PORT ?= 8000

.PHONY: setup run serve stdio test lint typecheck bench setup-test mutants

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/codemode portal --config portal.toml --port $(PORT)

serve: setup
	.venv/bin/codemode serve $(SPEC) --transport http --port $(PORT)

stdio: setup
	.venv/bin/codemode serve $(SPEC)

setup-test: setup
	@bash scripts/setup-wheelhouse.sh
	@bash scripts/setup-upstreams.sh
	@bash scripts/setup-node.sh
	@bash scripts/setup-postgres.sh
	@bash scripts/setup-browser.sh

lint:
	.venv/bin/ruff check codemode auth tests bench
	.venv/bin/ruff format --check codemode auth

typecheck:
	.venv/bin/mypy

test: setup-test lint typecheck
	CODEMODE_REQUIRE_ALL=1 $(PY) -m pytest -q -p no:cacheprovider

bench: setup
	$(PY) bench/run.py

# Mutation testing of the security-critical modules ([tool.mutmut] in pyproject.toml); survivors in README.
mutants: setup
	.venv/bin/pip install -q "mutmut==3.8.1"
	rm -rf mutants
	.venv/bin/mutmut run --max-children 2
	.venv/bin/mutmut results
