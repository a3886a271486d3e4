#!/usr/bin/env bash
# Builds and tests tflic with Bazel, offline (docs/bazel.md).
#
# Usage: tools/bazel_test.sh [BAZEL TEST ARGS...]         (default: //...)
#   tools/bazel_test.sh --test_tag_filters=fast //...     the fast subset (.ci/run)
#
# Installs Debian's Bazel 4 (bazel-bootstrap; as root, with apt) if there is no `bazel`.
# Bazel keeps its output base outside the repository, in ~/.cache/bazel (Bazel's default)
# or under $TFLIC_BAZEL_OUTPUT_ROOT; only the bazel-* links (git-ignored) appear here.
# With CI set, the Bazel server is shut down at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v bazel >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "tools/bazel_test.sh: no bazel; install it with: apt-get install bazel-bootstrap" >&2
    exit 1
  fi
  echo "tools/bazel_test.sh: installing Bazel (Debian's bazel-bootstrap)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq bazel-bootstrap >/dev/null
fi

startup=()
if [ -n "${TFLIC_BAZEL_OUTPUT_ROOT:-}" ]; then
  startup=(--output_user_root="$TFLIC_BAZEL_OUTPUT_ROOT")
fi
[ $# -gt 0 ] || set -- //...
# The bazel-* links of an earlier build with another output base lead into that one's
# external repositories, which `//...` would then load; each build makes its own anew.
for link in bazel-*; do
  if [ -L "$link" ]; then rm -f "$link"; fi
done
status=0
bazel "${startup[@]}" test "$@" || status=$?
if [ -n "${CI:-}" ]; then
  bazel "${startup[@]}" shutdown || true
fi
exit "$status"
