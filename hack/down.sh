#!/usr/bin/env bash
# Undoes hack/up.sh: deletes the quickstart Stack (berth removes its containers and network and
# keeps its volumes), then stops the berth serve that hack/up.sh started, by the pid it recorded.
# The data directory stays; remove it to start from an empty store next time.
#
# Environment: BERTH_DATA_DIR and BERTH_BIN, as for hack/up.sh.
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

DATA_DIR="${BERTH_DATA_DIR:-$BERTH_ROOT/.berth}"
export BERTH_DATA_DIR="$DATA_DIR"
berth="${BERTH_BIN:-$BERTH_ROOT/target/debug/berth}"
pidfile="$DATA_DIR/serve.pid"

pid="$(cat "$pidfile" 2>/dev/null || true)"
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null \
  || ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "serve --data-dir"; then
  log "no berth serve started by hack/up.sh is running (no live pid in $pidfile); nothing to do"
  rm -f "$pidfile"
  exit 0
fi

log "deleting the quickstart Stack (its containers and network go, volumes stay)"
if ! "$berth" delete -f manifests/quickstart/ --ignore-not-found --wait --timeout 2m; then
  log "warning: deleting the quickstart Stack did not complete; its containers may remain (see $DATA_DIR/serve.log)"
fi

log "stopping berth serve (pid $pid)"
kill -TERM "$pid"
for _ in $(seq 1 150); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
if kill -0 "$pid" 2>/dev/null; then
  die "berth serve (pid $pid) did not stop within 30s; see $DATA_DIR/serve.log, or stop it with: kill -KILL $pid"
fi
rm -f "$pidfile"
log "berth serve stopped; its data stays in $DATA_DIR"
