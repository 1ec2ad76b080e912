#!/usr/bin/env bash
# Fails on any clippy warning in any target of the workspace.
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

if ! cargo clippy --workspace --all-targets --quiet -- -D warnings; then
  die "clippy reports warnings (above). Fix them; do not silence them without a reason in a comment."
fi
log "clippy is clean"
