#!/usr/bin/env bash
# Fails when any Rust file is not formatted by rustfmt.
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

if ! cargo fmt --all -- --check; then
  die "some files are not formatted. Run: cargo fmt --all"
fi
log "formatting is clean"
