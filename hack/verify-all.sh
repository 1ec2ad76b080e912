#!/usr/bin/env bash
# Runs every hack/verify-*.sh and reports all failures, not just the first.
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

failed=()
for script in hack/verify-*.sh; do
  [ "$script" = "hack/verify-all.sh" ] && continue
  log "running $script"
  if ! "$script"; then
    failed+=("$script")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  die "failed: ${failed[*]}"
fi
log "all verify scripts passed"
