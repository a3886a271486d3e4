#!/usr/bin/env bash
# Runs a command in the background at the lowest CPU priority, logging to a file:
#
#   tools/background.sh LOG COMMAND [ARGS...]
#
# `nice` alone does not lower a job against jobs started from another login: Linux's
# autogroup scheduler shares the CPU between sessions first. So the command gets a session
# of its own (setsid) whose autogroup is set to the lowest priority too. Prints its PID.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 LOG COMMAND [ARGS...]" >&2
  exit 2
fi
log=$1
shift
setsid bash -c 'echo 19 > /proc/self/autogroup 2>/dev/null || true; exec nice -n 19 "$@"' \
  background "$@" > "$log" 2>&1 < /dev/null &
echo $!
