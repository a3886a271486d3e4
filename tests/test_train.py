"""Training: the loss goes down, runs resume, interruptions and NaNs lose nothing."""

import dataclasses
import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tflic import config
from tflic import errors
from tflic.model import checkpoint
from tflic.model import distortion
from tflic.model import precision
from tflic import train  # pylint: disable=unused-import  (defines the flags run_main parses)
from tflic.training import data
from tflic.training import trainer as trainer_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run_train(*args, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", "tflic.train", "--progress=false", *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _checkpoint_steps(workdir):
  return sorted(int(p.name.split("-")[1].split(".")[0])
                for p in (workdir / "checkpoints").glob("ckpt-*.index"))


def test_training_tiny_lowers_the_loss(train_dir, tmp_path):
  cfg = config.load("tiny")
  trainer = trainer_lib.Trainer(cfg, str(tmp_path), tf.distribute.get_strategy(), seed=0)
  batches = iter(data.train_dataset(str(train_dir), 64, 4, seed=1))
  fixed = next(batches)

  def evaluate():
    # Rounded latents (no noise) and every lambda: a deterministic loss.
    return np.mean([float(trainer_lib.rate_distortion(trainer.model, fixed, i, cfg.train,
                                                   training=False)["loss"])
                    for i in range(trainer.model.num_lambdas)])

  before = evaluate()
  for _ in range(10):  # (seen: 0.66 of the loss after 10 steps, 0.49 after 30)
    trainer.train_step(next(batches))
  after = evaluate()
  assert int(trainer.step.numpy()) == 10
  assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_training_steps_and_restores_as_float32(dtype, train_dir, tmp_path):
  """precision=bfloat16 (or float16, with loss scaling) trains the networks in that type
  on float32 variables; the latent's and the pixels' layers stay float32; the checkpoint
  restores into a float32 model (exports, codec) with the same weights. (On a CPU with
  AMX, `auto` is bfloat16: test_training_tiny_lowers_the_loss trains with it.)"""
  cfg = config.load("tiny")
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=dtype))
  trainer = trainer_lib.Trainer(cfg, str(tmp_path), tf.distribute.get_strategy(), seed=0)
  # Eager steps: the same computation without the trace of the step's graph.
  trainer._train_step = trainer._distributed_step  # pylint: disable=protected-access
  assert trainer.model.synthesis.layers[1].compute_dtype == dtype
  assert trainer.model.context.compute_dtype == dtype
  for part, layer in (("analysis", 0), ("analysis", -1), ("synthesis", 0),
                      ("synthesis", -1), ("hyper_analysis", -1)):
    assert getattr(trainer.model, part).layers[layer].compute_dtype == "float32"
  assert {v.dtype for v in trainer.model.variables} == {tf.float32}
  assert (trainer._loss_scale is not None) == (dtype == "float16")  # pylint: disable=protected-access
  batches = iter(data.train_dataset(str(train_dir), 64, 2, seed=1))
  before = trainer_lib.weights_digest(trainer.model)
  # float16's loss scale starts high and halves at each step whose gradients overflow,
  # which it skips: a few steps until one applies.
  for _ in range(12):
    _, metrics = trainer.train_step(next(batches))
    assert all(math.isfinite(v) for v in metrics.values())
    if trainer_lib.weights_digest(trainer.model) != before:
      break
  assert trainer_lib.weights_digest(trainer.model) != before
  checkpoint.save_model(str(tmp_path / "saved"), cfg, trainer.model, step=2)
  _, restored, step = checkpoint.restore_model(str(tmp_path / "saved"))
  assert step == 2 and restored.synthesis.layers[1].compute_dtype == "float32"
  assert trainer_lib.weights_digest(restored) == trainer_lib.weights_digest(trainer.model)
  assert trainer.model.as_float32().networks_dtype == "float32"


def test_precision_auto_and_bad_values():
  """auto resolves to a concrete dtype; a config with an unknown precision is refused."""
  assert precision.resolve("auto") in ("float32", "bfloat16", "float16")
  assert precision.resolve("float32") == "float32"
  d = json.loads(config.load("tiny").to_json())
  d["train"]["precision"] = "float8"
  with pytest.raises(errors.TflicError, match="precision"):
    config.from_dict(d)


def test_ms_ssim_loss_is_its_rate_plus_weighted_distortion_with_finite_gradients(train_dir):
  cfg = config.load("tiny")
  train_config = dataclasses.replace(cfg.train, distortion="ms-ssim")
  tf.random.set_seed(3)
  model = checkpoint.build_model(cfg)
  x = next(iter(data.train_dataset(str(train_dir), 64, 2, seed=1)))
  with tf.GradientTape() as tape:
    metrics = trainer_lib.rate_distortion(model, x, 1, train_config, training=False)
  # training=False rounds without noise, so a second pass reproduces the reconstruction.
  out = model(x, model.quality_of(1), training=False)
  score = tf.reduce_mean(distortion.ms_ssim(tf.clip_by_value(out["x_hat"], 0, 1), x))
  expected = metrics["bpp"] + float(model.lambdas[1]) * (1 - score)
  assert float(metrics["loss"]) == pytest.approx(float(expected), rel=1e-4)
  assert float(metrics["ms_ssim"]) == pytest.approx(float(score), rel=1e-4)  # logged
  gradients = tape.gradient(metrics["loss"], model.trainable_variables)
  assert all(np.isfinite(tf.convert_to_tensor(g).numpy()).all()
             for g in gradients if g is not None)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(train_dir, tmp_path, monkeypatch):
  cfg = config.load("tiny")

  def poisoned(self, x):
    # What the training loop sees of a step, without the model (its trace would cost most
    # of this test; the other tests here train for real): a NaN loss at step 14.
    assert x.shape == (cfg.train.batch_size, cfg.train.patch_size, cfg.train.patch_size, 3)
    self.step.assign_add(1)
    loss = float("nan") if int(self.step.numpy()) == 14 else 1.0
    return 0, {"loss": loss, "bpp": 0.5, "psnr": 20.0}

  monkeypatch.setattr(trainer_lib.Trainer, "train_step", poisoned)
  handler = signal.getsignal(signal.SIGTERM)
  with pytest.raises(errors.TflicError, match="loss became nan at step 14.*step 10"):
    trainer_lib.train(cfg, str(tmp_path), 30, str(train_dir), tf.distribute.get_strategy(),
                   progress=False)
  assert _checkpoint_steps(tmp_path) == [10]
  assert signal.getsignal(signal.SIGTERM) is handler  # left as it was, error or not


def test_bad_arguments_give_one_line_errors_before_writing_anything(tmp_path, run_main):
  # `tflic train` in this process (the command's own process: the tests above and below).
  for args, message in (
      (("--config=tiny", "--dataset=/nonexistent"), "no images"),
      (("--config=gigantic",), "no config named"),
      (("--config=tiny", "--train_only=analysis,gs"), "train_only names unknown parts gs"),
      (("--config=tiny", "--lambda_weights=1,x,1,1"), "--lambda_weights must be numbers"),
      (("--config=tiny", "--lambda_weights=1,2"),
       "lambda_weights needs 4 non-negative numbers"),
      (("--config=tiny", "--loss_weights=1,2,x,1"), "--loss_weights must be numbers"),
      (("--config=tiny", "--loss_weights=1,-2,1,1"),
       "loss_weights needs 4 non-negative numbers")):
    status, _, stderr = run_main("train", "--progress=false", f"--workdir={tmp_path}", *args)
    assert status == 2, stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith("tflic train: error: ") and message in line, stderr
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_train_only_the_encoder_keeps_the_decoder(train_dir, tmp_path):
  cfg = config.load("tiny")
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(
      cfg.train, train_only=("analysis", "hyper_analysis"), warmup_steps=1))
  trainer = trainer_lib.Trainer(cfg, str(tmp_path), tf.distribute.get_strategy(), seed=0)
  model = trainer.model
  encoder = model.analysis.variables + model.hyper_analysis.variables
  frozen = [v for v in model.variables if all(v is not e for e in encoder)]
  before = [v.numpy() for v in model.variables]
  batches = iter(data.train_dataset(str(train_dir), 64, 2, seed=1))
  for _ in range(2):  # the first step's learning rate is 0 (warm-up)
    trainer.train_step(next(batches))
  changed = {id(v) for v, b in zip(model.variables, before) if not np.array_equal(v, b)}
  assert all(id(v) in changed for v in model.analysis.trainable_variables)
  assert not any(id(v) in changed for v in frozen)
  assert trainer.parameter_count() == sum(
      int(np.prod(v.shape)) for v in model.analysis.trainable_variables +
      model.hyper_analysis.trainable_variables)


def test_lambda_weights_set_how_often_each_lambda_is_drawn(tmp_path):
  cfg = config.load("tiny")
  weighted = dataclasses.replace(cfg, train=dataclasses.replace(
      cfg.train, lambda_weights=(0, 3, 0, 1)))
  trainer = trainer_lib.Trainer(weighted, str(tmp_path / "w"), tf.distribute.get_strategy(),
                             seed=0)
  draws = np.array([trainer.draw_lambda() for _ in range(4000)])
  assert set(draws) == {1, 3}
  assert abs(np.mean(draws == 1) - 0.75) < 0.03
  uniform = trainer_lib.Trainer(cfg, str(tmp_path / "u"), tf.distribute.get_strategy(), seed=0)
  counts = np.bincount([uniform.draw_lambda() for _ in range(4000)], minlength=4)
  assert counts.min() > 900 and counts.max() < 1100, counts


def test_loss_weights_scale_each_lambdas_gradient_not_its_logged_loss(train_dir, tmp_path):
  """A lambda whose loss weight is 0 moves no weight; its logged loss stays unweighted."""
  cfg = config.load("tiny")
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(
      cfg.train, lambda_weights=(1, 0, 0, 0), loss_weights=(0, 1, 1, 1), warmup_steps=1))
  trainer = trainer_lib.Trainer(cfg, str(tmp_path), tf.distribute.get_strategy(), seed=0)
  trainer._train_step = trainer._distributed_step  # pylint: disable=protected-access
  batches = iter(data.train_dataset(str(train_dir), 64, 2, seed=1))
  before = trainer_lib.weights_digest(trainer.model)
  for _ in range(2):  # the first step's learning rate is 0 (warm-up)
    lambda_index, metrics = trainer.train_step(next(batches))
    assert lambda_index == 0 and metrics["loss"] > 0.01
  assert trainer_lib.weights_digest(trainer.model) == before
  trainer.cfg = dataclasses.replace(cfg, train=dataclasses.replace(
      cfg.train, loss_weights=(0.5, 1, 1, 1)))
  trainer.train_step(next(batches))
  assert trainer_lib.weights_digest(trainer.model) != before


def _grown(tmp_path, **gains):
  """(source, model, grown config path): a tiny model's checkpoint at step 7 (its log
  gains all set to gains["log_gains"], if given), and a config that appends a Swin block
  to its latent (latent_depth=1)."""
  source = tmp_path / "source"
  cfg = config.load("tiny")
  tf.random.set_seed(1)
  model = checkpoint.build_model(cfg)
  if "log_gains" in gains:
    model.log_gains.assign(tf.fill(model.log_gains.shape, gains["log_gains"]))
  checkpoint.save_model(str(source), cfg, model, step=7)
  grown_config = dict(json.loads(cfg.to_json()), name="grown")
  grown_config["model"]["latent_depth"] = 1
  grown_config["train"]["precision"] = "float32"  # compared with the float32 source
  config_path = tmp_path / "grown.json"
  config_path.write_text(json.dumps(grown_config))
  return source, model, config_path


def test_init_from_grows_a_trained_model_without_changing_it(tmp_path):
  """A config with latent_depth blocks starts from a checkpoint of one without: the new
  blocks are the identity and the step carries over. (`tflic train --init_from` grows a
  model and trains on: test_grow_train_kill_9_then_resume_with_fine_tuning_flags.)"""
  source, model, config_path = _grown(tmp_path)
  trainer = trainer_lib.Trainer(config.load(str(config_path)), str(tmp_path / "probe"),
                             tf.distribute.get_strategy())
  assert trainer.warm_start(str(source)) == 1
  assert int(trainer.step.numpy()) == 7
  x = tf.random.uniform([1, 64, 64, 3], seed=2)
  for a, b in zip(trainer.model.reconstruct(x, 0.5, coded=False),
                  model.reconstruct(x, 0.5, coded=False)):
    np.testing.assert_array_equal(a, b)


def test_init_from_maps_the_gains_onto_other_lambdas(tmp_path):
  """A config with a lambda below the source's and one between two of them starts from
  the source's gains: at the source's lambdas it reconstructs as the source did, and the
  new lambdas' gains are the source's interpolated (or extrapolated) in log lambda."""
  source, cfg = tmp_path / "source", config.load("tiny")
  model = checkpoint.build_model(cfg)
  gains = np.random.default_rng(0).normal(size=model.log_gains.shape).astype(np.float32)
  model.log_gains.assign(gains)
  checkpoint.save_model(str(source), cfg, model, step=7)
  old = list(cfg.model.lambdas)
  d = json.loads(cfg.to_json())
  d["model"]["lambdas"] = [old[0] / 4, old[0], math.sqrt(old[0] * old[1])] + old[1:]
  d["train"]["precision"] = "float32"  # compared with the float32 source
  trainer = trainer_lib.Trainer(config.from_dict(d), str(tmp_path / "probe"),
                             tf.distribute.get_strategy())
  trainer.warm_start(str(source))
  regained = trainer.model.log_gains.numpy()
  np.testing.assert_array_equal(regained[[1] + list(range(3, len(old) + 2))], gains)
  np.testing.assert_allclose(regained[2], (gains[0] + gains[1]) / 2, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(regained[0], gains[0] - 2 * (gains[1] - gains[0]) / math.log(
      old[1] / old[0]) * math.log(2), rtol=1e-5, atol=1e-5)
  x = tf.random.uniform([1, 64, 64, 3], seed=2)
  for a, b in zip(trainer.model.reconstruct(x, trainer.model.quality_of(1), coded=False),
                  model.reconstruct(x, 0.0, coded=False)):
    np.testing.assert_array_equal(a, b)


def test_grow_train_kill_9_then_resume_with_fine_tuning_flags(train_dir, tmp_path, run_main):
  """One workflow, so that its two training runs (a train step's trace costs most of
  each) serve what were five tests:

  1. `--init_from` a checkpoint of a model without the config's latent Swin block: the
     run starts from its step (7) with the new block, and trains on; kill -9 after its
     first checkpoint loses at most one checkpoint interval.
  2. Re-running resumes that checkpoint (the workdir's own, not --init_from), with
     --respread_gains (the source's gains had one spread for all lambdas: it is reset,
     each channel's mean kept) and the fine-tuning flags (STE quantization, rounded
     inputs), which the workdir's config then records. (In this process: `tflic train`
     as a library call, which leaves the process's SIGTERM handler as it was.)
  3. Once more, with a MirroredStrategy on two logical CPUs: the checkpoint restores under
     it (checkpoints do not depend on the strategy), and nothing is left to train.
     (Training under a strategy with several replicas: test_multi_worker.py.)
  """
  source, model, config_path = _grown(tmp_path, log_gains=0.2)
  workdir = tmp_path / "grown"
  args = (f"--config={config_path}", f"--workdir={workdir}", f"--dataset={train_dir}",
          f"--init_from={source}")
  log = tmp_path / "killed.log"
  with open(log, "w") as stdout:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tflic.train", "--progress=false", *args, "--steps=100000",
         "--checkpoint_every=5", "--batch_size=2"], cwd=REPO, stdout=stdout,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1"))
    try:
      deadline = time.time() + 480
      # Killed as soon as the first checkpoint is complete (its state file names it): a
      # fixed wait let fast steps write two more, and the manager kept only those.
      while time.time() < deadline and not checkpoint.latest_checkpoint(str(workdir)):
        time.sleep(0.05)
    finally:
      proc.send_signal(signal.SIGKILL)
      proc.wait()
  assert f"starting from {source} at step 7, 1 new Swin block(s)" in log.read_text()
  saved = _checkpoint_steps(workdir)
  assert saved and saved[0] == 10, f"no checkpoint written before the kill: {saved}"
  _, killed, step = checkpoint.restore_model(str(workdir))
  assert step == saved[-1]
  assert len(killed.analysis.layers) == len(model.analysis.layers) + 1
  log_lambdas = np.log(np.array(config.load("tiny").model.lambdas))
  expected = (killed.log_gains.numpy().mean(0) +
              0.5 * (log_lambdas - log_lambdas.mean())[:, None])
  assert np.abs(killed.log_gains.numpy() - expected).max() > 0.1  # still narrow

  target = saved[-1] + 3
  sigterm = signal.getsignal(signal.SIGTERM)
  status, stdout, stderr = run_main(
      "train", "--progress=false", *args, f"--steps={target}", "--batch_size=2",
      "--respread_gains", "--quantization=ste", "--context_input=rounded",
      "--hyper_input=rounded", "--rate_input=rounded", "--learning_rate=1e-9")
  assert status in (0, None), stderr[-2000:]
  assert signal.getsignal(signal.SIGTERM) is sigterm  # train() restored its handler
  assert f"{workdir} has checkpoints: resuming them, not --init_from" in stdout
  assert f"resuming from step {saved[-1]}" in stdout
  assert _checkpoint_steps(workdir)[-1] == target
  _, resumed_model, step = checkpoint.restore_model(str(workdir))
  assert step == target
  np.testing.assert_allclose(resumed_model.log_gains.numpy(), expected, atol=1e-4)
  trained = checkpoint.load_config(str(workdir)).train
  assert (trained.quantization, trained.context_input, trained.hyper_input,
          trained.rate_input) == ("ste", "rounded", "rounded", "rounded")

  again = _run_train(*args, f"--steps={target}", "--strategy=mirrored", "--logical_cpus=2")
  assert again.returncode == 0, again.stderr[-2000:]
  assert "MirroredStrategy with 2 replica(s)" in again.stdout, again.stdout
  assert f"already trained to step {target}" in again.stdout, again.stdout
  assert _checkpoint_steps(workdir)[-1] == target


def test_init_from_refuses_a_model_that_does_not_fit(train_dir, tmp_path, run_main):
  sources = {}
  for change, value in (("latent_channels", 64), ("latent_depth", 1)):
    d = json.loads(config.load("tiny").to_json())
    d["model"][change] = value
    sources[change] = tmp_path / change
    checkpoint.save_model(str(sources[change]), config.from_dict(d),
                          checkpoint.build_model(config.from_dict(d)))
  for init_from, message in ((sources["latent_channels"], "does not fit this config"),
                             (sources["latent_depth"], "variable(s) this model lacks"),
                             (tmp_path / "nothing", "no checkpoint in")):
    # `tflic train` in this process: the refusal comes before any training.
    status, _, stderr = run_main("train", "--progress=false", "--config=tiny",
                                 f"--workdir={tmp_path / 'new'}", f"--dataset={train_dir}",
                                 f"--init_from={init_from}", "--steps=1")
    assert status == 2
    assert message in stderr and "Traceback" not in stderr, stderr


def test_weights_average_follows_its_decay_and_lives_in_the_checkpoints(tmp_path,
                                                                          monkeypatch):
  """average_decay keeps avg = d * avg + (1 - d) * weights (each train step calls the
  update; under two workers: test_multi_worker), started from the weights; checkpoints
  keep it (restore_model(average=True) reads it), a checkpoint without one starts it
  from its weights, and a codec of the average stores its coding tables apart."""
  cfg = config.load("tiny")
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, average_decay=0.75))
  plain = trainer_lib.Trainer(dataclasses.replace(cfg, train=dataclasses.replace(
      cfg.train, average_decay=0.0)), str(tmp_path / "plain"), tf.distribute.get_strategy())
  plain._build_optimizer()  # pylint: disable=protected-access  (as a train step does)
  checkpoint.save_config(str(tmp_path / "plain"), plain.cfg)
  plain.save()
  with pytest.raises(errors.TflicError, match="holds no average of the weights"):
    checkpoint.restore_model(str(tmp_path / "plain"), average=True)

  workdir = tmp_path / "averaged"
  (workdir / "checkpoints").mkdir(parents=True)
  for path in (tmp_path / "plain" / "checkpoints").iterdir():  # a run without an average
    (workdir / "checkpoints" / path.name).write_bytes(path.read_bytes())
  checkpoint.save_config(str(workdir), cfg)
  trainer = trainer_lib.Trainer(cfg, str(workdir), tf.distribute.get_strategy())
  trainer.restore()
  trainer.start_average()
  assert trainer_lib.weights_digest(trainer.average) == trainer_lib.weights_digest(plain.model)
  rng = np.random.default_rng(0)
  floats = [v.dtype.is_floating for v in trainer.model.variables]
  expected = [v.numpy() for v in trainer.model.variables]
  for _ in range(2):  # as training moves the weights
    for v in trainer.model.variables:
      if v.dtype.is_floating:
        v.assign_add(rng.normal(0, 0.1, v.shape).astype(np.float32))
    trainer._update_average()  # pylint: disable=protected-access
    expected = [0.75 * e + 0.25 * v.numpy() if f else v.numpy()
                for e, v, f in zip(expected, trainer.model.variables, floats)]
    for e, a in zip(expected, trainer.average.variables):
      np.testing.assert_allclose(a.numpy(), e, rtol=1e-5, atol=1e-6)
  trainer.step.assign(3)
  trainer.save()

  _, weights, step = checkpoint.restore_model(str(workdir))
  _, average, average_step = checkpoint.restore_model(str(workdir), average=True)
  assert step == average_step == 3
  assert trainer_lib.weights_digest(weights) == trainer_lib.weights_digest(trainer.model)
  assert trainer_lib.weights_digest(average) == trainer_lib.weights_digest(trainer.average)
  assert trainer_lib.weights_digest(average) != trainer_lib.weights_digest(weights)
  resumed = trainer_lib.Trainer(cfg, str(workdir), tf.distribute.get_strategy())
  resumed.restore()
  resumed.start_average()  # restored: kept as it was
  assert trainer_lib.weights_digest(resumed.average) == trainer_lib.weights_digest(average)
  resumed.start_average(reset=True)
  assert trainer_lib.weights_digest(resumed.average) == trainer_lib.weights_digest(weights)

  from tflic.codec.deterministic import tables  # pylint: disable=g-import-not-at-top
  from tflic.codec import tf_codec  # pylint: disable=g-import-not-at-top
  prefixes = []

  def load_or_create(prefix, model):  # (making the tiny model's tables takes 25 s)
    prefixes.append((prefix, trainer_lib.weights_digest(model)))
    raise errors.TflicError("stop here")
  monkeypatch.setattr(tables, "load_or_create", load_or_create)
  for average_flag in (False, True):
    with pytest.raises(errors.TflicError, match="stop here"):
      tf_codec.module_from_workdir(str(workdir), average=average_flag)
  latest = checkpoint.latest_checkpoint(str(workdir))
  assert prefixes == [(latest, trainer_lib.weights_digest(weights)),
                      (latest + ".average", trainer_lib.weights_digest(average))]


def test_resume_point_is_the_average_and_seeds_a_new_run(tmp_path):
  """tools/resume_point.py writes the weights' average (or the weights) as a model-only
  training directory, float16 (half the bytes) or float32, replacing the previous one
  whole; --init_from and restore_model read it at the run's step."""
  cfg = config.load("tiny")
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, average_decay=0.5))
  workdir, out = tmp_path / "run", tmp_path / "models" / "tiny"
  trainer = trainer_lib.Trainer(cfg, str(workdir), tf.distribute.get_strategy())
  trainer._build_optimizer()  # pylint: disable=protected-access  (as a train step does)
  trainer.start_average()
  for v in trainer.average.variables:  # an average that differs from the weights
    if v.dtype.is_floating:
      v.assign(v + 0.25)
  trainer.step.assign(12)
  checkpoint.save_config(str(workdir), cfg)
  trainer.save()

  def resume_point(*flags):
    result = subprocess.run([sys.executable, str(REPO / "tools" / "resume_point.py"),
                             f"--workdir={workdir}", f"--out={out}", *flags],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "at step 12" in result.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]  # nothing staged left
    _, restored, step = checkpoint.restore_model(str(out))
    assert step == 12
    return trainer_lib.weights_digest(restored)

  def stored_dtypes():
    prefix = checkpoint.latest_checkpoint(str(out))
    return {d for n, d in tf.train.load_checkpoint(prefix).get_variable_to_dtype_map().items()
            if n.startswith("model/")}

  def as_float16(model):  # the float32 values a float16 resume point restores
    copy = checkpoint.build_model(cfg)
    for source, target in zip(model.variables, copy.variables):
      target.assign(tf.cast(tf.cast(source, tf.float16), source.dtype) if
                    source.dtype.is_floating else source)
    return trainer_lib.weights_digest(copy)

  assert resume_point("--source=weights", "--dtype=float32") == trainer_lib.weights_digest(
      trainer.model)
  assert stored_dtypes() == {tf.float32}
  float32_bytes = sum(p.stat().st_size for p in out.rglob("*.data-*"))
  # The next call replaces it; float16 is the default.
  assert resume_point() == as_float16(trainer.average)
  assert stored_dtypes() == {tf.float16}
  assert sum(p.stat().st_size for p in out.rglob("*.data-*")) < 0.6 * float32_bytes
  seeded = trainer_lib.Trainer(cfg, str(tmp_path / "new"), tf.distribute.get_strategy())
  seeded.warm_start(str(out))
  assert int(seeded.step.numpy()) == 12
  assert trainer_lib.weights_digest(seeded.model) == as_float16(trainer.average)
