#!/usr/bin/env bash
# The one test command: starts what the tests need (a Docker daemon, the local test image, the
# Python kubernetes client), runs every verify script, then every test of the workspace,
# end-to-end tests included.
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

started=$(date +%s)
hack/ensure-docker.sh
hack/e2e-images.sh
hack/ensure-test-tools.sh
hack/verify-all.sh
log "cargo test --workspace"
cargo test --workspace --no-fail-fast
log "all tests passed in $(( $(date +%s) - started ))s"
