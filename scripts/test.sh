#!/usr/bin/env bash
# Run portkit's whole test suite (installing first what is missing), with its quality gates.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
.venv/bin/ruff check src tests bench
.venv/bin/mypy
exec .venv/bin/pytest -q "$@"
