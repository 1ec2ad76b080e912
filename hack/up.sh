#!/usr/bin/env bash
# Starts berth on this machine (embedded store in .berth/, the local Docker daemon) and applies
# the quickstart Stack, then waits until it is Ready. Run it again to reuse the running server.
# Stop the server with: kill "$(cat .berth/serve.pid)"
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BERTH_ROOT"

DATA_DIR="${BERTH_DATA_DIR:-$BERTH_ROOT/.berth}"
export BERTH_DATA_DIR="$DATA_DIR"

hack/ensure-docker.sh
hack/e2e-images.sh
log "building berth"
cargo build --quiet -p berth
berth="$BERTH_ROOT/target/debug/berth"
mkdir -p "$DATA_DIR"

if [ -f "$DATA_DIR/serve.pid" ] && kill -0 "$(cat "$DATA_DIR/serve.pid")" 2>/dev/null; then
  log "berth serve is already running (pid $(cat "$DATA_DIR/serve.pid"))"
else
  log "starting berth serve (data: $DATA_DIR, log: $DATA_DIR/serve.log)"
  setsid "$berth" serve --data-dir "$DATA_DIR" --config manifests/berth.yaml >"$DATA_DIR/serve.log" 2>&1 </dev/null &
  echo $! >"$DATA_DIR/serve.pid"
  for _ in $(seq 1 100); do
    [ -s "$DATA_DIR/kubeconfig" ] && "$berth" version >/dev/null 2>&1 && break
    if ! kill -0 "$(cat "$DATA_DIR/serve.pid")" 2>/dev/null; then
      tail -n 20 "$DATA_DIR/serve.log" >&2
      die "berth serve exited; its log is above ($DATA_DIR/serve.log)"
    fi
    sleep 0.2
  done
fi

"$berth" apply -f manifests/quickstart/
"$berth" wait --for=condition=Ready stack/hello --timeout 2m
"$berth" get stacks
cat <<MSG

berth is running. Try:
  curl http://127.0.0.1:18080/
  $berth get stacks,hosts
  kubectl --kubeconfig $DATA_DIR/kubeconfig get stacks
Stop it with: kill \$(cat $DATA_DIR/serve.pid)
MSG
