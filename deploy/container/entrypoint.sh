#!/bin/sh
# Container entrypoint for llmcm. With no arguments, or only flags, it runs `llmcm serve`; any
# other llmcm command runs as given (`backup create --repo main`, `doctor`, `restore ...`).
# For `serve` it picks up /etc/llmcm/llmcm.toml when present (or $LLMCM_CONFIG), checks that the
# data directory is writable (a volume mounted with the wrong owner is the usual first-run
# failure) and then execs the server, so it is PID 1 and receives SIGTERM/SIGHUP itself.
set -eu

llmcm="${LLMCM_BIN:-llmcm}"
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
  set -- serve "$@"
fi
if [ "$1" = serve ]; then
  LLMCM_DATA_DIR="${LLMCM_DATA_DIR:-/var/lib/llmcm}"
  export LLMCM_DATA_DIR
  if [ -z "${LLMCM_CONFIG:-}" ] && [ -f /etc/llmcm/llmcm.toml ]; then
    LLMCM_CONFIG=/etc/llmcm/llmcm.toml
    export LLMCM_CONFIG
  fi
  mkdir -p "$LLMCM_DATA_DIR" 2> /dev/null || true
  if ! [ -d "$LLMCM_DATA_DIR" ] || ! [ -w "$LLMCM_DATA_DIR" ]; then
    echo "llmcm-entrypoint: data directory $LLMCM_DATA_DIR is not writable by uid $(id -u):" \
      "mount a volume it owns (Kubernetes: securityContext.fsGroup)" >&2
    exit 78
  fi
fi
exec "$llmcm" "$@"
