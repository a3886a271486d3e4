r"""Trains a tflic model.

  python -m tflic.train --config=tiny --workdir=/tmp/tiny --steps=30

Re-running the same command resumes from the latest checkpoint in --workdir and trains
until the global step reaches --steps. TensorBoard logs go to WORKDIR/train.

--strategy=multi_worker trains on the workers TF_CONFIG lists (`python -m tflic.launch`
starts them on one machine): run each with the same flags and a --workdir on a filesystem
all of them share. The chief writes the checkpoints and summaries; every worker resumes
from the chief's latest checkpoint and stops at the chief's --steps; SIGTERM or Ctrl-C to
any worker stops all of them after the same step, with a checkpoint.
"""

import contextlib
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from tflic import cli
from tflic import common_flags
from tflic import config as config_lib
from tflic import errors
from tflic.model import checkpoint as checkpoint_lib
from tflic.training import data
from tflic.training import trainer as trainer_lib

_CONFIG = flags.DEFINE_string(
    "config", "small",
    "Config name in configs/ (tiny, small, medium, paper, cnn_small) or a JSON file path.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
_STEPS = flags.DEFINE_integer("steps", 100000, "Train until this global step.")
_DATASET = common_flags.DATASET
DEFAULT_DATASET = "../shared/data/train"
_TFDS_DATA_DIR = common_flags.TFDS_DATA_DIR
_STRATEGY = flags.DEFINE_enum(
    "strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
    "tf.distribute strategy. multi_worker reads TF_CONFIG (python -m tflic.launch runs "
    "workers on this machine); tpu needs --tpu.")
_TPU = flags.DEFINE_string("tpu", "", "TPU address for --strategy=tpu.")
_JIT = flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Override the config's global batch size.")
_PATCH = flags.DEFINE_integer("patch_size", None, "Override the config's crop size.")
_CROPS = flags.DEFINE_enum(
    "crops", None, config_lib.CROPS,
    "Override the crops per image and pass: image (one each) or area (one per 4 crop "
    "areas of the image, at least one: large photos are seen in proportion to their "
    "pixels).")
_LR = flags.DEFINE_float("learning_rate", None, "Override the config's learning rate.")
_QUANTIZATION = flags.DEFINE_enum(
    "quantization", None, ["noise", "ste"],
    "Override what the synthesis sees in training: y plus uniform noise, or y rounded "
    "with a straight-through gradient (e.g. to fine-tune for the decoder's rounding).")
_CONTEXT_INPUT = flags.DEFINE_enum(
    "context_input", None, config_lib.TRAINING_INPUTS,
    "Override what the context model sees in training: y plus uniform noise, or y rounded "
    "around the means of a first context pass, as the decoder's context is (slower; e.g. "
    "to fine-tune for the coded rate).")
_HYPER_INPUT = flags.DEFINE_enum(
    "hyper_input", None, config_lib.TRAINING_INPUTS,
    "Override what the hyper synthesis sees in training: z plus uniform noise, or z "
    "quantized as by the codec, with a straight-through gradient.")
_RATE_INPUT = flags.DEFINE_enum(
    "rate_input", None, config_lib.RATE_INPUTS,
    "Override what the rate term measures in training: the density of the latents plus "
    "uniform noise, the probabilities of the rounded latents (the coded bits) with a "
    "straight-through gradient, or split: the coded bits, whose gradient reaches y from "
    "the noisy density and the means and scales from the coded bits.")
_TRAIN_ONLY = flags.DEFINE_list(
    "train_only", None,
    "Override the config's parts to train, freezing the rest: any of "
    f"{', '.join(config_lib.MODEL_PARTS)}; e.g. analysis,hyper_analysis trains the "
    "encoder and keeps the decoder. 'all' trains every part.")
_LAMBDA_WEIGHTS = flags.DEFINE_list(
    "lambda_weights", None,
    "Override how often training draws each lambda: one relative weight per lambda of "
    "the config (e.g. 1,1,1,1,2,2 for twice the steps at the two highest rates); "
    "'uniform' draws them alike.")
_LOSS_WEIGHTS = flags.DEFINE_list(
    "loss_weights", None,
    "Override the multipliers of each lambda's loss in the gradient: one per lambda of "
    "the config (e.g. about 1 / each lambda's logged loss, so that the low lambdas' steps "
    "move the shared weights as much as the high ones'); 'uniform' weights them alike.")
_AVERAGE_DECAY = flags.DEFINE_float(
    "average_decay", None,
    "Override the config's decay of the weights' moving average kept in the checkpoints "
    "(0: none; 0.999: about the last 1,000 steps). Started on a checkpoint without one, "
    "it starts from its weights. `python -m tflic.export --average` exports it; "
    "tools/crop_check.py checks it beside the weights.")
_PRECISION = flags.DEFINE_enum(
    "precision", None, list(config_lib.PRECISIONS),
    "Override the config's arithmetic of the networks: auto (the fastest for this "
    "machine: bfloat16 on TPUs and AMX CPUs, float16 on GPUs, else float32), float32, "
    "bfloat16 or float16. Weights stay float32; exports are float32.")
_CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", None,
                                         "Override the config's checkpoint interval.")
_CONTEXT_MODE = flags.DEFINE_enum(
    "context_mode", None, ["wavefront", "serial"],
    "Override the config's context mask (it fixes the decoding order of the model).")
_LOGICAL_CPUS = flags.DEFINE_integer(
    "logical_cpus", 0, "Split the CPU into this many logical devices, to run a "
    "distribution strategy without accelerators (tests, debugging).")
_RESPREAD_GAINS = flags.DEFINE_bool(
    "respread_gains", False,
    "Once, when resuming a checkpoint trained from equal gains: reset the gains' spread "
    "across lambdas to the high-rate optimum.")
_INIT_FROM = flags.DEFINE_string(
    "init_from", None,
    "Start a new --workdir from the weights and step of this workdir's latest checkpoint, "
    "e.g. to grow a trained model by latent_depth blocks (they start as the identity) or "
    "to widen its transforms by whole factors (embed_dims, num_heads); "
    "the optimizer starts afresh. Ignored when --workdir has checkpoints.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for data order, noise and lambda sampling.")
_PROGRESS = common_flags.PROGRESS
common_flags.declare_key_flags(__name__, "dataset", "progress", "tfds_data_dir")


def _train_only():
  if _TRAIN_ONLY.value is None:
    return None
  return [] if _TRAIN_ONLY.value == ["all"] else _TRAIN_ONLY.value


def _per_lambda(flag):
  """A per-lambda list flag's numbers: None if unset, [] for 'uniform'."""
  if flag.value is None:
    return None
  if flag.value == ["uniform"]:
    return []
  try:
    return [float(w) for w in flag.value]
  except ValueError:
    raise errors.TflicError(f"--{flag.name} must be numbers, got "
                            f"{','.join(flag.value)!r}") from None


def _cluster_task():
  """'worker 1' (TF_CONFIG's task of this process), or None without a cluster."""
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  if not resolver.task_type or not resolver.cluster_spec().as_dict():
    return None
  return f"{resolver.task_type} {resolver.task_id}"


def _remove_autograph_files():
  # What autograph's exit functions do (they are skipped): remove the modules it wrote,
  # `__autograph_generated_file*.py` in the temporary directory.
  for name, module in list(sys.modules.items()):
    path = getattr(module, "__file__", None)
    if name.startswith("__autograph_generated_file") and path:
      try:
        os.remove(path)
      except OSError:
        pass


@contextlib.contextmanager
def _exit_at_once_in_a_cluster(cluster):
  """In a cluster, ends the process as soon as training ends (status 0, or 2 with one line
  for a TflicError, 130 when interrupted), skipping the interpreter's teardown: once
  another worker is gone, TensorFlow's teardown waits for it (5 to 30 s seen), and
  freeing training's objects (their TensorFlow resources) can block for ever."""
  if not cluster:
    yield
    return
  try:
    yield
  # Exits inside the except clauses: leaving them would free the traceback, and with it
  # training's objects (see trainer_lib.train's _kept_until_exit).
  except errors.TflicError as e:
    print(f"tflic train: error: {e}", file=sys.stderr)
    _exit_now(2)
  except KeyboardInterrupt:
    print("tflic train: interrupted", file=sys.stderr)
    _exit_now(130)
  _exit_now(0)


def _exit_now(status):
  _remove_autograph_files()
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)  # pylint: disable=protected-access


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _WORKDIR.value:
    raise errors.TflicError("--workdir is required")
  cfg = config_lib.load(_CONFIG.value)
  saved = checkpoint_lib.load_config(_WORKDIR.value)
  overrides = {k: v for k, v in dict(batch_size=_BATCH.value, patch_size=_PATCH.value,
                                      crops=_CROPS.value,
                                      learning_rate=_LR.value,
                                      quantization=_QUANTIZATION.value,
                                      context_input=_CONTEXT_INPUT.value,
                                      hyper_input=_HYPER_INPUT.value,
                                      rate_input=_RATE_INPUT.value,
                                      train_only=_train_only(),
                                      lambda_weights=_per_lambda(_LAMBDA_WEIGHTS),
                                      loss_weights=_per_lambda(_LOSS_WEIGHTS),
                                      average_decay=_AVERAGE_DECAY.value,
                                      precision=_PRECISION.value,
                                      checkpoint_every=_CHECKPOINT_EVERY.value).items()
               if v is not None}
  if overrides or _CONTEXT_MODE.value:
    d = json.loads(cfg.to_json())
    d["train"].update(overrides)
    d["model"]["context_mode"] = _CONTEXT_MODE.value or d["model"]["context_mode"]
    cfg = config_lib.from_dict(d)
  if saved is not None and saved.model != cfg.model:
    raise errors.TflicError(
        f"{_WORKDIR.value} holds a '{saved.name}' model that differs from --config="
        f"{_CONFIG.value}; use another --workdir")
  dataset = _DATASET.value or DEFAULT_DATASET
  if dataset.startswith("tfds:"):  # fail early, with one line, on an unprepared dataset
    data.check_tfds(dataset[len("tfds:"):], _TFDS_DATA_DIR.value)
  else:
    data.image_files(dataset)  # fail early, with one line, on a wrong path
  if _LOGICAL_CPUS.value:
    cpu, = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * _LOGICAL_CPUS.value)
  cluster = _cluster_task() if _STRATEGY.value == "multi_worker" else None
  if cluster:
    # The strategy's constructor waits (for ever) until every worker of TF_CONFIG has
    # started; tflic.launch watches for these two lines (JOINING, JOINED there).
    print(f"{cluster}: joining the cluster", flush=True)
  strategy = trainer_lib.make_strategy(_STRATEGY.value, _TPU.value)
  if cluster:
    print(f"{cluster}: joined the cluster", flush=True)
    trainer_lib.stop_all_workers_on_signals()
  print(f"strategy: {type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)")
  if trainer_lib.is_chief(strategy):
    checkpoint_lib.save_config(_WORKDIR.value, cfg)
  with _exit_at_once_in_a_cluster(cluster):
    trainer_lib.train(cfg, _WORKDIR.value, _STEPS.value, dataset, strategy,
          jit_compile=_JIT.value, seed=_SEED.value, tfds_data_dir=_TFDS_DATA_DIR.value,
          progress=_PROGRESS.value, respread_gains=_RESPREAD_GAINS.value,
          init_from=_INIT_FROM.value)


if __name__ == "__main__":
  app.run(cli.guarded(main, "train"))
