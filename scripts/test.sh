#!/usr/bin/env bash
# The whole test suite: unit, integration, property, golden and bench-smoke tests,
# then doctests. Works from any directory.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

cargo test --workspace --all-targets
cargo test --workspace --doc
