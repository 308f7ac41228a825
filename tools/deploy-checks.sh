#!/usr/bin/env bash
# Checks the deployment artefacts with their real tools: the systemd units and timers with
# `systemd-analyze verify` (ExecStart must name an existing executable, so the units are checked
# in a scratch copy pointing at the binary given as $1). Usage: tools/deploy-checks.sh BIN
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(realpath "${1:?usage: tools/deploy-checks.sh path/to/llmcm}")"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for f in deploy/systemd/*; do
  sed "s#/usr/local/bin/llmcm#$bin#g" "$f" > "$scratch/$(basename "$f")"
done
# The template unit is checked through the instances the timers start.
for kind in incremental differential full; do
  cp "$scratch/llmcm-backup@.service" "$scratch/llmcm-backup@$kind.service"
done
echo "systemd-analyze verify deploy/systemd"
cd "$scratch"
# Any output (a warning such as an unknown key) fails the check, not only errors.
out="$(systemd-analyze verify llmcm.service llmcm-backup@incremental.service \
  llmcm-backup@differential.service llmcm-backup@full.service \
  llmcm-backup-incremental.timer llmcm-backup-differential.timer llmcm-backup-full.timer 2>&1)" || {
  echo "$out"; exit 1; }
if [ -n "$out" ]; then
  echo "$out"
  exit 1
fi
echo "systemd units: ok"
