#!/bin/sh
# Builds tools/entropy_core_fuzz.c (the C decoder core under clang's libFuzzer, with
# AddressSanitizer and UndefinedBehaviorSanitizer) and runs it for SECONDS, seeded with
# the .tflic files in SEEDS, decoding with MODEL's integer_entropy_model.npz (the bundled
# model by default). Exits non-zero on any finding (crash inputs are left in the cwd).
#
# Usage: tools/fuzz_entropy_core.sh SEEDS [SECONDS [MODEL_NPZ]]   (CC overrides clang)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
seeds=$1
seconds=${2:-600}
npz=${3:-$root/tflic/bundled/model/assets/integer_entropy_model.npz}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"${CC:-clang}" -std=c99 -O1 -g -Wall -Wextra -fno-omit-frame-pointer \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I "$root/tflic/codec/rangecoder" \
  "$root/tflic/codec/rangecoder/entropy_core.c" "$root/tflic/codec/rangecoder/range_coder.c" \
  "$root/tools/entropy_core_fuzz.c" -lm -o "$out/entropy_core_fuzz"
PYTHONPATH="$root" python3 -c "
import sys, numpy as np
from tflic.codec.rangecoder import entropy_core
with np.load(sys.argv[1]) as d:
  open(sys.argv[2], 'wb').write(entropy_core.model_blob({k: d[k] for k in d.files}))
" "$npz" "$out/model.tfec"
mkdir "$out/corpus"
TFLIC_FUZZ_MODEL="$out/model.tfec" ASAN_OPTIONS=detect_leaks=1 \
  UBSAN_OPTIONS=print_stacktrace=1 \
  "$out/entropy_core_fuzz" -max_total_time="$seconds" -max_len=65536 -timeout=20 \
  -rss_limit_mb=2048 -print_final_stats=1 "$out/corpus" "$seeds"
