#!/usr/bin/env bash
# Makes sure a Docker daemon answers on the default socket. Uses a running daemon when
# `docker info` works; otherwise installs Debian's docker.io when dockerd is missing, starts
# dockerd in the background (log under a temp dir) and waits until it answers.
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if docker info >/dev/null 2>&1; then
  log "docker: a daemon is already running ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown))"
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "dockerd is not installed and this is not root: install docker.io (apt-get install docker.io) and start it"
  log "docker: dockerd is missing; installing Debian's docker.io"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q docker.io >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get install -y -q docker.io >/dev/null
  fi
fi
if ! command -v docker >/dev/null 2>&1; then
  die "the docker client is missing although dockerd is installed; install docker.io"
fi

[ "$(id -u)" = 0 ] || die "no Docker daemon answers and starting one needs root; start dockerd and run again"
logdir="$(mktemp -d /tmp/berth-dockerd.XXXXXX)"
log "docker: no daemon answers; starting dockerd (log: $logdir/dockerd.log)"
# setsid: the daemon outlives this script and is not killed with the calling shell's job.
setsid dockerd >"$logdir/dockerd.log" 2>&1 </dev/null &
echo $! >"$logdir/dockerd.pid"

for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then
    log "docker: dockerd $(docker version --format '{{.Server.Version}}') is up (pid $(cat "$logdir/dockerd.pid"))"
    exit 0
  fi
  if ! kill -0 "$(cat "$logdir/dockerd.pid")" 2>/dev/null; then
    tail -n 30 "$logdir/dockerd.log" >&2 || true
    die "dockerd exited during start-up; its log is above and in $logdir/dockerd.log"
  fi
  sleep 0.5
done
tail -n 30 "$logdir/dockerd.log" >&2 || true
die "dockerd did not answer within 60s; see $logdir/dockerd.log"
