"""Training: the distributed train step, checkpoints, logging, NaN guard.

`train()` is what `python -m tflic.train` runs; `Trainer` is usable on its own (tests,
benchmarks, notebooks).
"""

import contextlib
import hashlib
import math
import os
import shutil
import signal
import tempfile
import time

from absl import logging
import numpy as np
import tensorflow as tf

from tflic import errors
from tflic.model import checkpoint as checkpoint_lib
from tflic.model import distortion
from tflic.model.layers import fused_ops
from tflic.model.layers import SwinBlock
from tflic.model import precision
from tflic.training import adam
from tflic.training import data
from tflic.training import widening


def make_strategy(name, tpu=""):
  """The tf.distribute strategy named by --strategy."""
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  return tf.distribute.get_strategy()


def is_chief(strategy):
  """True for the worker that owns the checkpoints (always, without a cluster)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == "chief" or (
      resolver.task_type == "worker" and resolver.task_id == 0 and
      "chief" not in resolver.cluster_spec().as_dict())


def worker_index_and_count(strategy):
  """(this worker's index, number of workers): (0, 1) without a cluster."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return 0, 1
  jobs = resolver.cluster_spec().as_dict()
  workers = len(jobs.get("chief", ())) + len(jobs.get("worker", ()))
  index = resolver.task_id + (1 if resolver.task_type == "worker" and "chief" in jobs else 0)
  return index, workers


def sum_over_workers(strategy, values):
  """The sums over the workers of `values` (numbers; each worker passes its own).

  One collective all-reduce: every worker must call it at the same point. Without a
  cluster, returns `values`.
  """
  if worker_index_and_count(strategy)[1] == 1:
    return [float(v) for v in values]
  local_replicas = len(strategy.extended.worker_devices)  # each adds its worker's share
  mine = tf.constant([float(v) / local_replicas for v in values], tf.float64)

  @tf.function
  def reduce():
    return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(mine)),
                           axis=None)

  return [float(v) for v in reduce().numpy()]


def chief_values(strategy, values):
  """The chief's `values` (numbers; each worker passes its own), on every worker."""
  chief = is_chief(strategy)
  return sum_over_workers(strategy, [float(v) if chief else 0.0 for v in values])


def weights_digest(model):
  """A hex digest of a model's variables (shapes and values, in model order; not names,
  which depend on what else the process built)."""
  digest = hashlib.sha256()
  for variable in model.variables:
    value = np.asarray(variable.numpy())
    digest.update(f"{value.shape}{value.dtype}".encode())
    digest.update(np.ascontiguousarray(value).tobytes())
  return digest.hexdigest()[:16]


def learning_rate_schedule(train_config):
  """Linear warm-up, then constant or cosine decay (train_config.decay_steps > 0)."""
  decay_steps = train_config.decay_steps or 1
  return tf.keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=0.0, decay_steps=decay_steps,
      alpha=0.01 if train_config.decay_steps else 1.0,
      warmup_target=train_config.learning_rate,
      warmup_steps=max(train_config.warmup_steps, 1))


def rate_distortion(model, x, lambda_index, train_config, training=True):
  """Loss and metrics of one batch at one lambda: a dict of scalars.

  loss = bpp + lambda * 255^2 * MSE (x in [0, 1]), or bpp + lambda * (1 - MS-SSIM).
  """
  out = model(x, model.quality_of(lambda_index), training=training,
              quantization=train_config.quantization,
              context_input=train_config.context_input,
              hyper_input=train_config.hyper_input,
              rate_input=train_config.rate_input)
  num_pixels = tf.cast(tf.reduce_prod(tf.shape(x)[1:3]), tf.float32)
  bpp = tf.reduce_mean(out["bits_y"] + out["bits_z"]) / num_pixels
  mse = tf.reduce_mean(tf.square(out["x_hat"] - x))
  term = distortion.distortion_term(out["x_hat"], x, train_config.distortion)
  loss = bpp + tf.gather(model.lambdas, lambda_index) * term
  psnr = -10.0 * tf.math.log(tf.maximum(mse, 1e-10)) / tf.math.log(10.0)
  metrics = dict(loss=loss, bpp=bpp, mse=mse * 255.0**2, psnr=psnr,
                 bpp_z=tf.reduce_mean(out["bits_z"]) / num_pixels)
  if train_config.distortion == "ms-ssim":
    metrics["ms_ssim"] = 1 - term  # what the loss trades; logged beside PSNR
  return metrics


def _model_variable_keys(checkpoint_path):
  """Keys of the model's variables in a checkpoint (its place-based names)."""
  return {name.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE")
          for name, _ in tf.train.list_variables(checkpoint_path)
          if name.startswith("model/")}


class Trainer:
  """Owns the model, optimizer, checkpoints and the distributed train step."""

  def __init__(self, cfg, workdir, strategy, jit_compile=False, seed=0):
    self.cfg = cfg
    self.workdir = workdir
    self.strategy = strategy
    self.rng = np.random.default_rng(seed)
    tf.random.set_seed(seed)
    self.compute_dtype = precision.resolve(cfg.train.precision)
    with strategy.scope():
      self.model = checkpoint_lib.build_model(cfg, self.compute_dtype)
      self.optimizer = adam.FusedAdam(
          learning_rate_schedule(cfg.train), global_clipnorm=cfg.train.clip_norm)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      # The weights' moving average: a second model, so that a checkpoint's average
      # restores by the same names as its weights (checkpoint.restore_model).
      self.average = (checkpoint_lib.build_model(cfg) if cfg.train.average_decay
                      else None)
      # float16 gradients underflow without loss scaling; the scale is not checkpointed
      # (it adapts again in a few steps), so checkpoints do not depend on the precision.
      self._loss_scale = (tf.keras.mixed_precision.LossScaleOptimizer(self.optimizer)
                          if self.compute_dtype == "float16" else None)
    parts = dict(model=self.model, optimizer=self.optimizer, step=self.step)
    # What restore() reads from a checkpoint written before averaging was switched on.
    self._checkpoint_without_average = tf.train.Checkpoint(**parts)
    if self.average is not None:
      parts[checkpoint_lib.AVERAGE] = self.average
    self.checkpoint = tf.train.Checkpoint(**parts)
    self._average_restored = False
    self.checkpoint_dir = os.path.join(workdir, checkpoint_lib.CHECKPOINT_SUBDIR)
    self.is_chief = is_chief(strategy)
    self.worker_index, self.num_workers = worker_index_and_count(strategy)
    self._manager = tf.train.CheckpointManager(
        self.checkpoint, self.checkpoint_dir, max_to_keep=cfg.train.keep_checkpoints)
    self._optimizer_built = False
    self._stop_requested = self.stopping = False
    self._train_step = tf.function(self._distributed_step)
    self._jit_compile = jit_compile
    # Only the forward pass is compiled: the optimizer update stays outside XLA.
    self._loss = (tf.function(self._rate_distortion, jit_compile=True) if jit_compile
                  else self._rate_distortion)

  def restore(self):
    """Restores the chief's latest checkpoint, if any; returns the step reached."""
    latest = tf.train.latest_checkpoint(self.checkpoint_dir)
    if latest:
      checkpoint = self.checkpoint
      self._average_restored = (self.average is not None and
                                checkpoint_lib.has_average(latest))
      if self.average is not None and not self._average_restored:
        # Averaging starts now (`start_average`), on a checkpoint written without it.
        checkpoint = self._checkpoint_without_average
      checkpoint.restore(latest).assert_existing_objects_matched()
    return int(self.step.numpy())

  def start_average(self, reset=False):
    """Sets the weights' moving average to the weights, unless restore() restored one
    (or `reset`, e.g. after changing the weights by hand).

    Called once the weights are set before training (restored, warm-started, re-spread):
    the average starts from them rather than from zeros, which would bias it for its
    first thousands of steps.
    """
    if self.average is None or (self._average_restored and not reset):
      return
    for average, variable in zip(self.average.variables, self.model.variables):
      average.assign(variable)

  def warm_start(self, source_workdir):
    """Starts from the weights (and step) of another workdir's latest checkpoint.

    Variables are matched by their place in the model, so the source may be a model of
    the same config or one without blocks that this config appends (`latent_depth`); a
    source with variables this model lacks, or of other shapes, is refused. A source
    trained at other lambdas (its workdir's config) gives its gains to this config's
    lambdas by interpolation (`TflicModel.regain`). A source whose transforms are
    narrower by whole factors per stage is widened without changing what it computes
    (`tflic.training.widening`).
    Swin blocks the source lacks start as the identity, so the grown model computes what
    the source did; the optimizer starts afresh (with its warm-up). Returns the number of
    such new blocks.
    """
    latest = tf.train.latest_checkpoint(
        os.path.join(source_workdir, checkpoint_lib.CHECKPOINT_SUBDIR))
    if latest is None:
      raise errors.TflicError(f"--init_from: no checkpoint in {source_workdir!r}")
    misfit = f"--init_from={source_workdir}: does not fit this config"
    source_cfg = checkpoint_lib.load_config(source_workdir)
    if source_cfg is not None and widening.is_wider(source_cfg.model, self.cfg.model):
      return self._warm_start_wider(source_workdir, misfit)
    with tempfile.TemporaryDirectory() as tmp:
      own = tf.train.Checkpoint(model=self.model).write(os.path.join(tmp, "model"))
      extra = _model_variable_keys(latest) - _model_variable_keys(own)
    if extra:  # restoring would silently drop them
      raise errors.TflicError(f"{misfit}: it has {len(extra)} variable(s) this model lacks, "
                              f"e.g. {min(extra)}")
    blocks = [m for m in self.model.submodules if isinstance(m, SwinBlock)]
    before = [b.attn.proj.kernel.numpy() for b in blocks]
    source_lambdas = tuple((source_cfg or self.cfg).model.lambdas)
    own_gains = self.model.log_gains
    if source_lambdas != tuple(self.cfg.model.lambdas):
      # The source's gains, one row per its lambda, land in a stand-in of their shape.
      self.model.log_gains = tf.Variable(
          tf.zeros([len(source_lambdas), own_gains.shape[1]]), name="log_gains")
    try:
      with checkpoint_lib.float32_prefix(latest) as prefix:
        tf.train.Checkpoint(model=self.model, step=self.step).restore(prefix).expect_partial()
    except ValueError as e:  # a variable of another shape
      raise errors.TflicError(f"{misfit}: {str(e).splitlines()[0]}") from None
    finally:
      source_gains, self.model.log_gains = self.model.log_gains, own_gains
    if source_gains is not own_gains:
      self.model.regain(source_gains.numpy(), source_lambdas)
    new = [b for b, w in zip(blocks, before) if np.array_equal(b.attn.proj.kernel.numpy(), w)]
    for block in new:
      block.make_identity()
    return len(new)

  def _warm_start_wider(self, source_workdir, misfit):
    """warm_start from a model with narrower transforms (`tflic.training.widening`)."""
    source_cfg, source, step = checkpoint_lib.restore_model(source_workdir)
    self.step.assign(step)
    try:
      grown = widening.widen_transforms(source, self.model, self.rng)
      # The rest (hyperprior, context model, ...) keeps its shapes: copied as it is.
      widened = {id(v) for name in widening.TRANSFORMS
                 for model in (source, self.model) for v in getattr(model, name).variables}
      widened |= {id(source.log_gains), id(self.model.log_gains)}
      rest = [[v for v in model.variables if id(v) not in widened]
              for model in (source, self.model)]
      if len(rest[0]) != len(rest[1]):
        raise errors.TflicError(f"{len(rest[0])} variables beside the transforms do not "
                                f"fit {len(rest[1])}")
      for src, dst in zip(*rest):
        if src.shape != dst.shape:
          raise errors.TflicError(f"{src.name} is {src.shape}, not {dst.shape}")
        dst.assign(src)
    except errors.TflicError as e:
      raise errors.TflicError(f"{misfit}: {e}") from None
    if tuple(source_cfg.model.lambdas) == tuple(self.cfg.model.lambdas):
      self.model.log_gains.assign(source.log_gains)
    else:
      self.model.regain(source.log_gains.numpy(), source_cfg.model.lambdas)
    return grown

  def save(self):
    """Writes a checkpoint in the workdir (the chief) or to a temporary directory removed
    at once (other workers).

    Every worker must call this at the same step (a save may run collective ops), but only
    the chief's copy is kept, as TensorFlow's multi-worker guide recommends.
    """
    if self.is_chief:
      self._manager.save(checkpoint_number=self.step)
      return
    scratch = tempfile.mkdtemp(prefix=f"tflic-worker{self.worker_index}-checkpoint-")
    try:
      tf.train.CheckpointManager(self.checkpoint, scratch, max_to_keep=1).save(
          checkpoint_number=self.step)
    finally:
      shutil.rmtree(scratch, ignore_errors=True)

  def _rate_distortion(self, x, lambda_index):
    # XLA cannot compile the layers' fused CPU kernels (custom ops).
    with fused_ops.disabled() if self._jit_compile else contextlib.nullcontext():
      return rate_distortion(self.model, x, lambda_index, self.cfg.train)

  def _replica_step(self, x, lambda_index):
    with tf.GradientTape() as tape:
      metrics = self._loss(x, lambda_index)
      loss = metrics["loss"] / self.strategy.num_replicas_in_sync
      if self.cfg.train.loss_weights:
        loss *= tf.gather(tf.constant(self.cfg.train.loss_weights, tf.float32), lambda_index)
      if self._loss_scale is not None:
        loss = self._loss_scale.get_scaled_loss(loss)
    variables = self.trainable_variables()
    grads = tape.gradient(loss, variables)
    if self._loss_scale is not None:  # skips the update where the scaled grads overflow
      self._loss_scale.apply_gradients(
          zip(self._loss_scale.get_unscaled_gradients(grads), variables))
    else:
      self.optimizer.apply_gradients(zip(grads, variables))
    return metrics

  def _distributed_step(self, x, lambda_index, stop):
    metrics = self.strategy.run(self._replica_step, args=(x, lambda_index))
    self.step.assign_add(1)
    if self.average is not None:
      self._update_average()
    # Each worker's stop request rides on the metrics' all-reduce: all see the same value.
    metrics = dict(metrics, stop=tf.cast(stop, tf.float32))
    return {k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            for k, v in metrics.items()}

  def _update_average(self):
    # In cross-replica context: `extended.update` applies it to each replica's copy. (A
    # model's variables are all float32.)
    decay = self.cfg.train.average_decay
    for average, variable in zip(self.average.variables, self.model.variables):
      self.strategy.extended.update(
          average, lambda a, v: a.assign(decay * a + (1 - decay) * v), args=(variable,))

  def _build_optimizer(self):
    # Its variables made before the first call, the train step is traced once, not twice
    # (creating them inside tf.function traces it again); made after restore(), they are
    # restored from the checkpoint as they are made.
    if not self._optimizer_built:
      with self.strategy.scope():
        self.optimizer.build(self.trainable_variables())
      self._optimizer_built = True

  def request_stop(self):
    """Asks every worker to stop after the next step (see `stopping`)."""
    self._stop_requested = True

  def train_step(self, x):
    """One step at a lambda drawn as `lambda_weights` say; returns (lambda index, metrics).

    Afterwards `stopping` is True on every worker if any of them called `request_stop()`
    before this step: how the workers of a cluster agree on the step to stop at.
    """
    self._build_optimizer()
    lambda_index = self.draw_lambda()
    metrics = self._train_step(x, tf.constant(lambda_index),
                               tf.constant(self._stop_requested or bool(_stop_signals)))
    self.stopping = float(metrics.pop("stop")) > 0
    return lambda_index, {k: float(v) for k, v in metrics.items()}

  def draw_lambda(self):
    """Index of the lambda of the next step: uniform, or as `lambda_weights` say.

    Every worker draws from the same seed, so all replicas of a step share the lambda.
    """
    weights = self.cfg.train.lambda_weights
    if not weights:
      return int(self.rng.integers(self.model.num_lambdas))
    return int(self.rng.choice(len(weights), p=np.divide(weights, sum(weights))))

  def trainable_variables(self):
    """The variables the optimizer updates: all, or those of `train_only`'s parts."""
    parts = self.cfg.train.train_only
    if not parts:
      return self.model.trainable_variables
    parts = [getattr(self.model, part) for part in parts]
    return [v for part in parts
            for v in ([part] if isinstance(part, tf.Variable) else part.trainable_variables)]

  def parameter_count(self):
    """Number of parameters training updates."""
    return sum(int(np.prod(v.shape)) for v in self.trainable_variables())


class _Interrupted(KeyboardInterrupt):
  pass


def _raise_interrupted(signum, frame):
  del frame
  raise _Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def _sigterm_raises_interrupted():
  """SIGTERM raises _Interrupted inside the block; the old handler is back after it."""
  previous = signal.signal(signal.SIGTERM, _raise_interrupted)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def _op_error_cause(error):
  """The line of a TensorFlow op error that says what happened (not where)."""
  lines = [line.strip() for line in str(error).splitlines()]
  causes = [line for line in lines if line and not line.startswith(
      ("File ", "Graph execution error", "Detected at node", ":{", "Additional GRPC", "[["))]
  return (causes or lines or [""])[0][:200]


_stop_signals = []  # the signals received since stop_all_workers_on_signals()


def stop_all_workers_on_signals():
  """Makes SIGTERM or SIGINT to one worker of a cluster stop all of them after the same
  step (each saves and exits; see `Trainer.request_stop`); a second signal interrupts this
  worker at once. tflic.train calls it as soon as the cluster is made: TensorFlow's own
  SIGTERM handler, installed with the cluster, ignores the signal."""

  def request_stop(signum, frame):
    del frame
    if _stop_signals:
      raise _Interrupted(signal.Signals(signum).name)
    _stop_signals.append(signal.Signals(signum).name)

  signal.signal(signal.SIGTERM, request_stop)
  signal.signal(signal.SIGINT, request_stop)


_kept_until_exit = []


def _finish_together(trainer):
  """Waits for all workers to end training; the chief returns a second after the others.

  The chief's process serves the cluster's coordination service: the other workers'
  heartbeats fail (gRPC errors in their logs) once it is gone, so it ends last.
  """
  try:
    sum_over_workers(trainer.strategy, [0])
  except tf.errors.OpError:
    return  # another worker is gone: nothing to wait for
  if trainer.is_chief:
    time.sleep(1)


def _agree_with_the_chief(trainer, steps, start, workdir):
  """The workers of a cluster check that they restored the chief's checkpoint (the same
  step) and take the chief's --steps: returns it. Collective: all workers call it."""
  chief_steps, chief_start = (round(v) for v in chief_values(trainer.strategy, [steps, start]))
  missing = round(sum_over_workers(trainer.strategy, [start != chief_start])[0])
  if missing:
    here = (f"worker {trainer.worker_index} restored step {start}, the chief step "
            f"{chief_start}" if start != chief_start else
            f"{missing} worker(s) did not restore the chief's step {chief_start}")
    raise errors.TflicError(
        f"{here}: every worker must see the chief's checkpoints in {workdir} (a "
        "filesystem all workers share)")
  if chief_steps != steps:
    print(f"worker {trainer.worker_index}: --steps={steps}, the chief's {chief_steps}: "
          f"training to {chief_steps}")
  return chief_steps


def train(cfg, workdir, steps, dataset, strategy, jit_compile=False, seed=0,
          tfds_data_dir=None, progress=True, respread_gains=False, init_from=None):
  """Trains until global step `steps`; returns the last metrics per lambda.

  `init_from` (a workdir) seeds a new workdir with its weights (`Trainer.warm_start`);
  a workdir with checkpoints resumes from them instead. `respread_gains` resets the
  restored gains' spread across lambdas (see `TflicModel.respread_gains`) before training.
  """
  trainer = Trainer(cfg, workdir, strategy, jit_compile=jit_compile, seed=seed)
  restored = tf.train.latest_checkpoint(trainer.checkpoint_dir) is not None
  start = trainer.restore()
  if init_from and restored:
    print(f"{workdir} has checkpoints: resuming them, not --init_from")
  elif init_from:
    grown = trainer.warm_start(init_from)
    start = int(trainer.step.numpy())
    print(f"starting from {init_from} at step {start}"
          + (f", {grown} new Swin block(s) as the identity" if grown else ""))
  if respread_gains:
    trainer.model.respread_gains()
  trainer.start_average(reset=respread_gains)
  if trainer.num_workers > 1:
    steps = _agree_with_the_chief(trainer, steps, start, workdir)
  if start >= steps:
    print(f"{workdir}: already trained to step {start} (>= --steps={steps}); nothing to do")
    return {}
  if restored:
    print(f"resuming from step {start}")
  logging.info("parameters: %d", trainer.parameter_count())
  train_cfg = cfg.train
  batches = data.train_dataset(dataset, train_cfg.patch_size, train_cfg.batch_size,
                               seed=seed, tfds_data_dir=tfds_data_dir,
                               crops=train_cfg.crops)
  if trainer.num_workers > 1:
    # Every worker reads the whole dataset and keeps its share of each global batch (the
    # images are not split into files per worker); said here, TF does not warn about it.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    batches = batches.with_options(options)
  iterator = iter(strategy.experimental_distribute_dataset(batches))
  # Only the chief writes summaries (the other workers' metrics are the same all-reduced
  # values).
  writer = (tf.summary.create_file_writer(os.path.join(workdir, "train")) if trainer.is_chief
            else tf.summary.create_noop_writer())
  pixels_per_step = train_cfg.batch_size * train_cfg.patch_size**2
  bar = tf.keras.utils.Progbar(steps, stateful_metrics=["loss", "bpp", "psnr", "steps/s"],
                               verbose=1 if progress and trainer.is_chief else 0)
  bar.update(start)
  sums = {}  # per lambda: running sums of the metrics since the last log
  last_good, last_log_time, last_log_step = start, time.perf_counter(), start
  summary = {}
  if trainer.num_workers > 1:
    stop_all_workers_on_signals()
    signals = contextlib.nullcontext()
  else:  # a library call leaves the process's handler as it was, also on an error
    signals = _sigterm_raises_interrupted()
  with signals:
    try:
      while trainer.step.numpy() < steps:
        batch = next(iterator)
        try:
          lambda_index, metrics = trainer.train_step(batch)
        except tf.errors.OpError as e:
          if trainer.num_workers == 1:
            raise
          # A collective op failed: another worker died, or was stopped (TensorFlow's
          # heartbeat notices a dead peer in seconds). This worker's state is that of the
          # last finished step, but the others' is unknown: no checkpoint now.
          raise errors.TflicError(
              f"worker {trainer.worker_index}: training stopped after step "
              f"{int(trainer.step.numpy())}: a collective op failed ({type(e).__name__}: "
              f"{_op_error_cause(e)}), another worker is gone or failed; the chief's last "
              f"checkpoint (step {last_good}) is kept in {workdir}") from None
        step = int(trainer.step.numpy())
        if not all(math.isfinite(v) for v in metrics.values()):
          raise errors.TflicError(
              f"loss became {metrics['loss']} at step {step} (lambda #{lambda_index}); "
              f"stopped; the last good checkpoint (step {last_good}) is kept in {workdir}")
        entry = sums.setdefault(lambda_index, {"count": 0})
        entry["count"] += 1
        for k, v in metrics.items():
          entry[k] = entry.get(k, 0.0) + v
        if step % train_cfg.log_every == 0 or step == steps:
          now = time.perf_counter()
          steps_per_second = (step - last_log_step) / max(now - last_log_time, 1e-9)
          last_log_time, last_log_step = now, step
          with writer.as_default(step=step):
            tf.summary.scalar("steps_per_second", steps_per_second)
            tf.summary.scalar("pixels_per_second", steps_per_second * pixels_per_step)
            tf.summary.scalar("learning_rate", trainer.optimizer.learning_rate)
            for index, entry in sorted(sums.items()):
              means = {k: v / entry["count"] for k, v in entry.items() if k != "count"}
              summary[index] = means
              for k, v in means.items():
                tf.summary.scalar(f"lambda_{index}/{k}", v)
              tf.summary.scalar("loss", means["loss"])
          sums = {}
          shown = [k for k in ("loss", "bpp", "psnr", "ms_ssim") if k in metrics]
          bar.update(step, [(k, metrics[k]) for k in shown] + [("steps/s", steps_per_second)])
        if step % train_cfg.checkpoint_every == 0:
          trainer.save()
          last_good = step
        if trainer.stopping:
          print(f"\ninterrupted ({', '.join(_stop_signals) or 'by another worker'}): all workers "
                f"stop at step {step}; saving")
          break
    except (KeyboardInterrupt, _Interrupted) as e:
      if trainer.num_workers > 1:  # a second signal (stop_all_workers_on_signals)
        print(f"\ninterrupted again ({e or 'SIGINT'}) at step {int(trainer.step.numpy())}: "
              "this worker stops alone, without a checkpoint")
        raise
      print(f"\ninterrupted ({e or 'SIGINT'}) at step {int(trainer.step.numpy())}; saving")
    finally:
      writer.flush()
    if int(trainer.step.numpy()) != last_good:
      trainer.save()
    print(f"\ncheckpoint at step {int(trainer.step.numpy())} in {workdir}")
  if trainer.num_workers > 1:
    # Every worker's weights: the same on all (tests compare them with the chief's
    # checkpoint; `weights_digest(checkpoint.restore_model(workdir)[1])`).
    print(f"worker {trainer.worker_index}: weights digest {weights_digest(trainer.model)} at "
          f"step {int(trainer.step.numpy())}")
    _finish_together(trainer)
    # Freed after another worker's process has ended, these objects' TensorFlow resources
    # (the distributed input's) were seen to block for ever: kept until the process ends
    # (tflic.train then ends it at once).
    _kept_until_exit.append((trainer, batches, iterator, writer))
  return summary
