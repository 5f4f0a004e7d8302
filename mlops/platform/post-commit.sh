#!/bin/sh
# Installed by `mlops hooks` (make hooks): after each commit, ask the local stack to run
# continuous-integration/on-commit for it. The request runs in the background, so the commit
# never waits and never fails because of it; what happened goes to <state dir>/logs/post-commit.log.
# The stack is found through <state dir>/env (written by `mlops up`) or PREFECT_API_URL.
# MLOPS_CI_CHECKS=data,model,infra in the environment runs only those checks.
mlops_bin="@MLOPS_BIN@"  # where `mlops hooks` found prefect when it installed this hook

root=$(git rev-parse --show-toplevel 2>/dev/null) || exit 0
sha=$(git rev-parse HEAD 2>/dev/null) || exit 0
state="${MLOPS_STATE_DIR:-$root/.mlops}"
mkdir -p "$state/logs" 2>/dev/null || exit 0

(
  now() { date '+%Y-%m-%d %H:%M:%S'; }
  if [ -f "$state/env" ]; then . "$state/env"; fi
  bin=""
  for dir in "$root/.venv/bin" "$mlops_bin"; do
    if [ -x "$dir/prefect" ]; then bin="$dir"; break; fi
  done
  prefect="${bin:+$bin/}prefect"
  python="${bin:+$bin/}python"
  if [ -z "$bin" ] && ! command -v prefect >/dev/null 2>&1; then
    echo "$(now) $sha: CI not started: no prefect in $root/.venv/bin, $mlops_bin or PATH"
    exit 0
  fi
  if [ -z "${PREFECT_API_URL:-}" ]; then
    echo "$(now) $sha: CI not started: the stack is not up (no $state/env, no PREFECT_API_URL); start it with \`make up\`"
    exit 0
  fi
  if ! "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1].rstrip("/") + "/health", timeout=5)' \
      "$PREFECT_API_URL" >/dev/null 2>&1; then
    echo "$(now) $sha: CI not started: the stack is not up (no answer from $PREFECT_API_URL); start it with \`make up\`"
    exit 0
  fi
  set -- --no-prompt deployment run continuous-integration/on-commit --param "sha=$sha" --param "repo_path=$root"
  if [ -n "${MLOPS_CI_CHECKS:-}" ]; then
    checks=$(printf '%s' "$MLOPS_CI_CHECKS" | tr -d ' ' | sed 's/,/","/g')
    set -- "$@" --param "checks=[\"$checks\"]"
  fi
  echo "$(now) $sha: $prefect $*"
  "$prefect" "$@"
  echo "$(now) $sha: prefect exited $?"
) >>"$state/logs/post-commit.log" 2>&1 </dev/null &

exit 0
