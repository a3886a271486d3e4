"""Widening a trained model's transforms (tflic.training.widening, through Trainer.warm_start)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tflic import config
from tflic import errors
from tflic.model import checkpoint
from tflic.model.layers import SwinBlock
from tflic.training import trainer as trainer_lib


def _config(embed_dims, num_heads, **changes):
  d = json.loads(config.load("tiny").to_json())
  d["model"].update(embed_dims=embed_dims, num_heads=num_heads, **changes)
  d["train"]["precision"] = "float32"  # compared with the float32 source
  return config.from_dict(d)


@pytest.fixture(name="source", scope="module")
def fixture_source(tmp_path_factory):
  """(workdir, model): a tiny model at step 7 whose transforms have weights far from
  their near-identity initialization, so that every layer shapes the output."""
  workdir = tmp_path_factory.mktemp("narrow")
  cfg = config.load("tiny")
  model = checkpoint.build_model(cfg)
  rng = np.random.default_rng(3)
  for variable in model.analysis.variables + model.synthesis.variables:
    scale = 0.3 / np.sqrt(variable.shape[-2]) if len(variable.shape) > 1 else 0.1
    variable.assign(variable + rng.normal(scale=scale, size=variable.shape).astype(np.float32))
  checkpoint.save_model(str(workdir), cfg, model, step=7)
  return workdir, model


def _widened(source, tmp_path, cfg):
  trainer = trainer_lib.Trainer(cfg, str(tmp_path / "wide"), tf.distribute.get_strategy())
  trainer.warm_start(str(source))
  return trainer


def test_a_widened_model_computes_what_the_narrow_one_did(source, tmp_path):
  """Stages twice and three times as wide (heads alike), one stage kept, and a latent
  block appended: same reconstructions and rates, the step carried over."""
  workdir, model = source
  trainer = _widened(workdir, tmp_path,
                     _config([32, 72, 32, 64], [2, 6, 2, 4], latent_depth=1))
  assert int(trainer.step.numpy()) == 7
  assert trainer.model.analysis.layers[1].dim == 32
  x = tf.random.uniform([2, 64, 96, 3], seed=2)
  for quality in (0.0, 0.7):
    for wide, narrow in zip(trainer.model.reconstruct(x, quality, coded=False),
                            model.reconstruct(x, quality, coded=False)):
      np.testing.assert_allclose(wide, narrow, rtol=1e-4, atol=2e-5)
  for name in ("hyper_analysis", "hyper_synthesis", "context", "hyperprior"):
    for a, b in zip(getattr(trainer.model, name).variables, getattr(model, name).variables):
      np.testing.assert_array_equal(a, b)


def test_the_copies_of_a_widened_channel_get_different_gradients(source, tmp_path):
  """Random shares break the symmetry: training can make the copies differ."""
  workdir, _ = source
  trainer = _widened(workdir, tmp_path, _config([32, 24, 32, 32], [2, 2, 2, 2]))
  block = next(b for b in trainer.model.synthesis.layers if isinstance(b, SwinBlock)
               and b.dim == 32 and b.name.startswith("stage0"))
  x = tf.random.uniform([2, 64, 64, 3], seed=4)
  with tf.GradientTape() as tape:
    loss = trainer._rate_distortion(x, 1)["loss"]  # pylint: disable=protected-access
  kernel = block.mlp.layers[0].kernel
  grad = tape.gradient(loss, kernel).numpy()
  # [input copy, input channel, hidden copy, hidden unit]: each hidden unit's two copies
  # read the same sum of the two input copies (equal inputs), in other shares.
  shares = kernel.numpy().reshape(2, 16, 2, -1)
  np.testing.assert_allclose(*shares.sum(axis=0).transpose(1, 0, 2), rtol=1e-5, atol=1e-7)
  assert np.abs(shares[:, :, 0] - shares[:, :, 1]).max() > 1e-3
  first, second = np.split(grad, 2, axis=1)
  assert np.abs(first - second).max() > 1e-3 * np.abs(grad).max()


@pytest.mark.parametrize("embed_dims, num_heads, message", [
    ([24, 24, 32, 32], [1, 2, 2, 2], "not a whole multiple of 16"),
    ([32, 24, 32, 32], [1, 2, 2, 2], "needs 2 heads"),
])
def test_a_widening_that_does_not_fit_is_refused(source, tmp_path, embed_dims, num_heads,
                                                 message):
  workdir, _ = source
  cfg = _config(embed_dims, num_heads)
  trainer = trainer_lib.Trainer(cfg, str(tmp_path / "w"), tf.distribute.get_strategy())
  with pytest.raises(errors.TflicError, match=message):
    trainer.warm_start(str(workdir))
