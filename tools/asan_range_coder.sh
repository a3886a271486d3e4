#!/bin/sh
# Builds the C range coder (tflic/codec/rangecoder/range_coder.c) with the randomised
# self-check tools/range_coder_fuzz.c under AddressSanitizer and
# UndefinedBehaviorSanitizer, and runs it; any sanitizer report or broken
# contract makes the script exit non-zero.
#
# Usage: tools/asan_range_coder.sh [ITERATIONS [SEED]]   (CC overrides gcc)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"${CC:-gcc}" -std=c99 -O1 -g -Wall -Wextra -Werror -fno-omit-frame-pointer \
  -fsanitize=address,undefined -fno-sanitize-recover=all \
  -I "$root/tflic/codec/rangecoder" \
  "$root/tflic/codec/rangecoder/range_coder.c" "$root/tools/range_coder_fuzz.c" \
  -o "$out/range_coder_fuzz"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  "$out/range_coder_fuzz" "${1:-10000}" "${2:-1}"
