#!/usr/bin/env bash
# Installs the client tools the end-to-end tests drive when they are missing: the official
# Python kubernetes client, from PyPI, into a virtualenv under target/ (the system Python is
# left alone). kubectl is expected on the machine.
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

venv="$BERTH_ROOT/target/e2e-python"
if ! "$venv/bin/python" -c 'import kubernetes' >/dev/null 2>&1; then
  log "tools: installing the Python kubernetes client from PyPI into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check kubernetes
fi
command -v kubectl >/dev/null 2>&1 || die "kubectl is not installed; the e2e tests run the real kubectl (install kubectl 1.32)"
log "tools: $(kubectl version --client 2>/dev/null | head -1), python kubernetes $("$venv/bin/python" -c 'import kubernetes; print(kubernetes.__version__)')"
