#!/usr/bin/env bash
# Checks the deployment artefacts with their real tools: the systemd units and timers with
# `systemd-analyze verify` (ExecStart must name an existing executable, so the units are checked
# in a scratch copy pointing at the binary given as $1); the container file with hadolint, its
# entrypoint with shellcheck, and its build context (the paths it copies form a workspace that
# `cargo tree --locked` resolves); the Kubernetes manifests with `kubernetes-validate --strict`.
# tests/cli/deploy_artifacts.rs runs the entrypoint for real and cross-checks the manifests with the
# code (config parses, commands exist, grace period covers the drain).
# Usage: tools/deploy-checks.sh BIN
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

echo "hadolint deploy/container/Containerfile"
hadolint deploy/container/Containerfile
echo "shellcheck deploy/container/entrypoint.sh"
shellcheck -s sh deploy/container/entrypoint.sh
echo "container build context: cargo tree --locked on the paths the build stage copies"
context="$(mktemp -d)"
awk '/^FROM/ { stage++ } stage == 1 && /^COPY / && !/--from/ { for (i = 2; i < NF; i++) print $i }' \
  deploy/container/Containerfile | while read -r path; do cp -r "$path" "$context/"; done
(cd "$context" && cargo tree --locked --offline -p llmcm --depth 0 -q > /dev/null)
rm -rf "$context"
echo "kubernetes-validate --strict deploy/kubernetes"
for f in deploy/kubernetes/*.yaml; do
  kubernetes-validate --strict --quiet "$f"
done

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
cd "$root"
echo "deployment artefacts: ok"
