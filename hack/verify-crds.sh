#!/usr/bin/env bash
# Fails when crds/yaml/ is not what the Rust types in crds/src generate.
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cargo run --quiet -p berth -- crd --out-dir "$tmp"
if ! diff -ru crds/yaml "$tmp"; then
  die "crds/yaml/ is out of date with crds/src. Run hack/update-crds.sh and commit the result."
fi
log "crds/yaml/ is up to date"
