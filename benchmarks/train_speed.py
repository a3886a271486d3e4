r"""Training speed (steps/s, pixels/s) of configs, and of source trees side by side.

  python benchmarks/train_speed.py --config=small --config=medium
  python benchmarks/train_speed.py --config=medium --tree=/path/to/old/checkout --tree=.
  python benchmarks/train_speed.py --config=medium --baseline=/path/to/old/checkout --tree=. \
      --setting='' --setting='{"batch_size": 4, "patch_size": 256}'

Every (tree, config, setting) pair trains in a worker process of its own, with `tflic`
imported from its tree. After the warm-up (tracing) the workers take turns: one round of
`--steps` steps each, then the next worker, for `--rounds` rounds, so that whatever else
the machine does falls on all of them alike. Printed: the median over rounds, the ratio
to the first worker of the config (the `--baseline` tree's, if given: it runs at the
config's own fields, without `--setting`s, so other batch and patch sizes compare with
it in pixels per second), and what else used the CPU meanwhile. Each worker reads the same
images from the same seed.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

import cpu_use  # benchmarks/cpu_use.py

_CONFIG = flags.DEFINE_multi_string("config", ["small"], "Config names or paths.")
_TREE = flags.DEFINE_multi_string(
    "tree", [], "Source trees to compare (their `tflic` package); default: this one.")
_BASELINE = flags.DEFINE_string(
    "baseline", None, "A source tree that runs first, at each config's own fields (no "
    "--setting), as the reference of the ratios.")
_SETTING = flags.DEFINE_multi_string(
    "setting", [""], "Config overrides to compare, as JSON of train fields (e.g. "
    "'{\"precision\": \"float32\"}'); '' for none. Trees without such a field ignore it.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 4, "Rounds (each worker runs once a round).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first (tracing).")
_DATASET = flags.DEFINE_string("dataset", "../shared/data/train", "Training images.")
_JIT = flags.DEFINE_bool("jit", False, "Compile the forward pass with XLA.")
_WORKER = flags.DEFINE_string("worker", None, "Internal: run as a worker of this JSON spec.")


def _worker(spec):
  """Builds a trainer, then runs `--steps` steps for each line on stdin, printing seconds."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tflic import config as config_lib  # pylint: disable=import-outside-toplevel
  # pylint: disable=import-outside-toplevel
  try:
    from tflic.training import data
    from tflic.training import trainer as trainer_lib
  except ImportError:  # a checkout from before tflic/training/ (e.g. 005fbc2)
    from tflic import data
    from tflic import training as trainer_lib
  # pylint: enable=import-outside-toplevel

  cfg = config_lib.load(spec["config"])
  fields = {f.name for f in dataclasses.fields(cfg.train)}
  known = {k: v for k, v in spec["setting"].items() if k in fields}
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **known))
  train_cfg = cfg.train
  batches = iter(data.train_dataset(spec["dataset"], train_cfg.patch_size,
                                    train_cfg.batch_size, seed=0))
  trainer = trainer_lib.Trainer(cfg, "/tmp/tflic_speed_unused", tf.distribute.get_strategy(),
                             jit_compile=spec["jit"])
  for _ in range(spec["warmup"]):
    trainer.train_step(next(batches))
  print(json.dumps(dict(params=trainer.parameter_count(), applied=sorted(known),
                        pixels=train_cfg.batch_size * train_cfg.patch_size**2,
                        batch=f"{train_cfg.batch_size}x{train_cfg.patch_size}^2")), flush=True)
  for line in sys.stdin:
    steps = int(line)
    start = time.perf_counter()
    for _ in range(steps):
      trainer.train_step(next(batches))
    print(time.perf_counter() - start, flush=True)


def main(argv):
  del argv
  if _WORKER.value:
    _worker(json.loads(_WORKER.value))
    return
  trees = [os.path.abspath(t) for t in _TREE.value] or [
      os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
  workers = []
  for config in _CONFIG.value:
    runs = [(tree, setting) for tree in trees for setting in _SETTING.value]
    if _BASELINE.value:
      runs.insert(0, (os.path.abspath(_BASELINE.value), ""))
    for tree, setting in runs:
      spec = dict(config=config, setting=json.loads(setting or "{}"), dataset=_DATASET.value,
                  jit=_JIT.value, warmup=_WARMUP.value)
      env = dict(os.environ, PYTHONPATH=tree, TF_CPP_MIN_LOG_LEVEL="2")
      process = subprocess.Popen(
          [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=os.getcwd())
      workers.append(dict(label=f"{config} {tree} {setting or '-'}", process=process,
                          times=[]))
  own = {os.getpid()} | {w["process"].pid for w in workers}
  for worker in workers:  # the warm-ups run one after the other too
    worker["info"] = json.loads(worker["process"].stdout.readline())
  before, start = cpu_use.cpu_times(), time.time()
  for _ in range(_ROUNDS.value):
    for worker in workers:
      worker["process"].stdin.write(f"{_STEPS.value}\n")
      worker["process"].stdin.flush()
      worker["times"].append(float(worker["process"].stdout.readline()) / _STEPS.value)
  others = cpu_use.describe(cpu_use.others(before, cpu_use.cpu_times(), own))
  for worker in workers:
    worker["process"].stdin.close()
    worker["process"].wait()
  first = {}
  for worker in workers:
    seconds = statistics.median(worker["times"])
    info = worker["info"]
    rate = info["pixels"] / seconds
    reference = first.setdefault(worker["label"].split()[0], rate)
    print(f"{worker['label']}: params={info['params']:,} batch={info['batch']} "
          f"applied={','.join(info['applied']) or '-'}: {1 / seconds:.3f} steps/s, "
          f"{rate / 1e6:.4f} Mpixel/s, x{rate / reference:.2f} "
          f"(rounds: {', '.join(f'{1 / t:.3f}' for t in worker['times'])} steps/s)")
  print(f"{time.time() - start:.0f} s of rounds; beside them: {others}")


if __name__ == "__main__":
  app.run(main)
