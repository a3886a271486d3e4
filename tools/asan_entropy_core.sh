#!/bin/sh
# Builds the C entropy core (tflic/codec/rangecoder/entropy_core.c) with the mutation driver of
# tools/entropy_core_fuzz.c under AddressSanitizer and UndefinedBehaviorSanitizer (gcc,
# no libFuzzer needed) and runs it on MODEL_BLOB and .tflic FILES; any sanitizer report
# or broken contract makes the script exit non-zero. tools/fuzz_entropy_core.sh is the
# coverage-guided version (clang's libFuzzer).
#
# Usage: tools/asan_entropy_core.sh MODEL_BLOB ITERATIONS SEED FILES...   (CC overrides gcc)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
blob=$1
shift
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"${CC:-gcc}" -std=c99 -O1 -g -Wall -Wextra -Werror -fno-omit-frame-pointer \
  -fsanitize=address,undefined -fno-sanitize-recover=all -DTFLIC_FUZZ_MAIN \
  -I "$root/tflic/codec/rangecoder" \
  "$root/tflic/codec/rangecoder/entropy_core.c" "$root/tflic/codec/rangecoder/range_coder.c" \
  "$root/tools/entropy_core_fuzz.c" -lm -o "$out/entropy_core_fuzz"
TFLIC_FUZZ_MODEL="$blob" ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  "$out/entropy_core_fuzz" "$@"
