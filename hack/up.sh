#!/usr/bin/env bash
# Starts berth on this machine (embedded store in .berth/, the local Docker daemon) and applies
# the quickstart Stack, then waits until it is Ready and shows it. Run it again to reuse the
# running server. Undo it with hack/down.sh (deletes the quickstart Stack, stops the server).
#
# Environment (all optional):
#   BERTH_DATA_DIR  data directory (default: .berth)
#   BERTH_LISTEN    API address (default: 127.0.0.1:7443; 127.0.0.1:0 picks a free port, which
#                   the kubeconfig in the data directory then names)
#   BERTH_BIN       a berth binary to run instead of building target/debug/berth
#   DOCKER_HOST     the daemon berth registers as its `local` Host (default: the local socket)
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

DATA_DIR="${BERTH_DATA_DIR:-$BERTH_ROOT/.berth}"
export BERTH_DATA_DIR="$DATA_DIR"
LISTEN="${BERTH_LISTEN:-127.0.0.1:7443}"

hack/ensure-docker.sh
hack/e2e-images.sh
if [ -n "${BERTH_BIN:-}" ]; then
  berth="$BERTH_BIN"
else
  log "building berth"
  cargo build --quiet -p berth
  berth="$BERTH_ROOT/target/debug/berth"
fi
mkdir -p "$DATA_DIR"

running_pid() {
  local pid
  pid="$(cat "$DATA_DIR/serve.pid" 2>/dev/null)" || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Only a berth serve counts (a stale pid file may name a recycled pid).
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "serve --data-dir" || return 1
  echo "$pid"
}

if pid="$(running_pid)"; then
  log "berth serve is already running (pid $pid)"
else
  log "starting berth serve on $LISTEN (data: $DATA_DIR, log: $DATA_DIR/serve.log)"
  # A kubeconfig left by an earlier server must not count as this one answering.
  rm -f "$DATA_DIR/kubeconfig"
  setsid "$berth" serve --data-dir "$DATA_DIR" --listen "$LISTEN" --config manifests/berth.yaml \
    >"$DATA_DIR/serve.log" 2>&1 </dev/null &
  echo $! >"$DATA_DIR/serve.pid"
  up=""
  for _ in $(seq 1 300); do
    if [ -s "$DATA_DIR/kubeconfig" ] && "$berth" version >/dev/null 2>&1; then
      up=yes
      break
    fi
    if ! kill -0 "$(cat "$DATA_DIR/serve.pid")" 2>/dev/null; then
      tail -n 20 "$DATA_DIR/serve.log" >&2
      die "berth serve exited; its log is above ($DATA_DIR/serve.log)"
    fi
    sleep 0.2
  done
  if [ -z "$up" ]; then
    tail -n 20 "$DATA_DIR/serve.log" >&2
    die "berth serve (pid $(cat "$DATA_DIR/serve.pid")) did not answer within 60s; its log is above ($DATA_DIR/serve.log)"
  fi
fi

"$berth" apply -f manifests/quickstart/
"$berth" wait --for=condition=Ready stack/hello --timeout 2m
"$berth" get stacks
cat <<MSG

berth is running. Try:
  curl http://127.0.0.1:18080/
  $berth get stacks,hosts
  kubectl --kubeconfig $DATA_DIR/kubeconfig get stacks
Undo it (delete the quickstart Stack, stop the server) with: hack/down.sh
MSG
