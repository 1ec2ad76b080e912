#!/usr/bin/env bash
# Builds the local test image berth-e2e/busybox:latest from Debian's static busybox, so tests
# need no registry. Rebuilds only when the image is missing or the busybox binary changed.
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE="${BERTH_E2E_IMAGE:-berth-e2e/busybox:latest}"
BUSYBOX=/bin/busybox

if ! dpkg -s busybox-static >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "busybox-static is not installed; run: apt-get install busybox-static"
  log "images: installing Debian's busybox-static"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q busybox-static >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get install -y -q busybox-static >/dev/null
  fi
fi

sum="$(sha256sum "$BUSYBOX" | cut -c1-16)"
if [ "$(docker image inspect --format '{{index .Config.Labels "berth.dev/e2e-busybox"}}' "$IMAGE" 2>/dev/null || true)" = "$sum" ]; then
  log "images: $IMAGE is up to date"
  exit 0
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/www" "$ctx/rootfs/data" "$ctx/rootfs/etc"
cp "$BUSYBOX" "$ctx/rootfs/bin/busybox"
for applet in sh sleep httpd wget cat echo true false ls mkdir rm ps kill env date id nc head tail grep seq printf touch test hostname; do
  ln -s busybox "$ctx/rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/:/bin/sh' >"$ctx/rootfs/etc/passwd"
echo 'nobody:x:65534:65534:nobody:/:/bin/false' >>"$ctx/rootfs/etc/passwd"
echo 'root:x:0:' >"$ctx/rootfs/etc/group"
echo 'nogroup:x:65534:' >>"$ctx/rootfs/etc/group"
echo 'berth e2e' >"$ctx/rootfs/www/index.html"
cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
ENV PATH=/bin
LABEL berth.dev/e2e-busybox=$sum
CMD ["sh"]
DOCKERFILE
log "images: building $IMAGE from $BUSYBOX"
if ! docker build -q -t "$IMAGE" "$ctx" >"$ctx/build.log" 2>&1; then
  cat "$ctx/build.log" >&2
  die "could not build $IMAGE (docker build output above)"
fi
log "images: built $IMAGE"
