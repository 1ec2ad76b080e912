#!/usr/bin/env bash
# Regenerates crds/yaml/ from the Rust types in crds/src (via `berth crd`).
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

cargo run --quiet -p berth -- crd --out-dir crds/yaml
log "wrote crds/yaml/ ($(ls crds/yaml | tr '\n' ' '))"
