#!/usr/bin/env bash
# The long training run of the next bundled model, resumable on any machine:
#
#   tools/long_run.sh [CONFIG] [FLAGS...]     # default CONFIG: medium_hifi
#
# Resumes runs/CONFIG's checkpoints; where they are gone (a new machine), starts from the
# resume point committed in models/CONFIG (tools/resume_point.py: the weights or their
# average at a step; the optimizer and the average start afresh), else from scratch. Runs in the background at the lowest priority
# (tools/background.sh), logging to runs/CONFIG.log, from a snapshot of this checkout's
# HEAD in runs/source (TensorFlow re-reads a traced function's source file: editing the
# checkout under a running job breaks its next trace). Stop it with `kill PID` (SIGTERM
# saves a checkpoint). Its dated log is in the MODEL_CARD.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
name=${1:-medium_hifi}
shift || true
mkdir -p runs
source_tree=runs/source
rm -rf "$source_tree"
git worktree prune
git worktree add --detach --force "$source_tree" HEAD >/dev/null
# The compiled kernels (`pip install -e .` built them here): the snapshot has sources only.
(cd tflic && find . -name '*.so' -exec cp --parents {} "$root/$source_tree/tflic/" \;)
workdir=$root/runs/$name
data=$(cd "$root/.." && pwd)/shared/data
args=(--config="$root/configs/$name.json" --workdir="$workdir" --steps=1000000
      --progress=false --dataset="$data/train,$data/cid22,$data/clic2025-test")
if ! ls "$workdir"/checkpoints/ckpt-*.index >/dev/null 2>&1 && [ -d "models/$name" ]; then
  args+=(--init_from="$root/models/$name")
fi
cd "$source_tree"
exec "$root/tools/background.sh" "$workdir.log" python -m tflic.train "${args[@]}" "$@"
