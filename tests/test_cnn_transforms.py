"""The CNN variant (transform "cnn"): shapes, parameter budget, integer h_s, codec round trip."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tflic.codec import bitstream
from tflic.codec.deterministic import coding_loop
from tflic.codec.deterministic import entropy_model
from tflic.codec.deterministic import quantize
from tflic.codec.deterministic import reference
from tflic.codec import tf_codec
from tflic import config
from tflic import errors
from tflic.model import backends
from tflic.model import checkpoint
from tflic.training import data
from tflic.training import trainer as trainer_lib

SMALL_PARAMETERS = 1_389_980  # configs/small.json's: the budget cnn_small matches


def _tiny_cnn_dict():
  """configs/tiny.json with the convolutional transforms (y: 32 channels, h_s: 16)."""
  d = json.loads(config.load("tiny").to_json())
  d["name"] = "tiny_cnn"
  d["model"].update(transform="cnn", embed_dims=[16, 16, 16, 32], hyper_dim=16)
  return d


@pytest.fixture(scope="module")
def tiny_cnn():
  tf.random.set_seed(0)
  return checkpoint.build_model(config.from_dict(_tiny_cnn_dict()))


def test_transform_field_defaults_to_swin_and_is_validated():
  assert {config.load(name).model.transform for name in ("tiny", "small", "paper")} == {"swin"}
  assert config.load("cnn_small").model.transform == "cnn"
  cases = [(dict(transform="resnet"), "unknown transform 'resnet'"),
           (dict(embed_dims=[16, 16, 16, 24]), "embed_dims\\[3\\] must equal latent_channels"),
           (dict(latent_depth=1), "latent_depth and resample_kernel"),
           (dict(resample_kernel=3), "latent_depth and resample_kernel")]
  for change, message in cases:
    d = _tiny_cnn_dict()
    d["model"].update(change)
    with pytest.raises(errors.TflicError, match=message):
      config.from_dict(d)


def test_shapes(tiny_cnn):
  x = tf.random.uniform([2, 48, 80, 3])
  y = tiny_cnn.analysis(x)
  assert y.shape == (2, 3, 5, 32)
  assert tiny_cnn.synthesis(y).shape == (2, 48, 80, 3)
  z = tiny_cnn.hyper_latent(y)
  assert z.shape == (2, 1, 2, 16)
  assert tiny_cnn.hyper_features(z, 3, 5).shape == (2, 3, 5, 16)
  out = tiny_cnn(x, 0.5)
  assert out["x_hat"].shape == x.shape and out["mean"].shape == (2, 3, 5, 32)
  layer_types = {type(l).__name__ for part in (tiny_cnn.analysis, tiny_cnn.synthesis)
                 for l in part.layers}
  assert layer_types == {"Conv2D", "Conv2DTranspose", "GDN"}


def test_layers_round_trip_through_get_config(tiny_cnn):
  """The stacks are Keras and tfc layers (GDN, inverse GDN) that serialize: a layer made
  from its config, with its weights, computes the same."""
  for part, shape in ((tiny_cnn.analysis, [1, 32, 48, 3]), (tiny_cnn.synthesis, [1, 2, 3, 32]),
                      (tiny_cnn.hyper_synthesis, [1, 2, 3, 16])):
    inputs = tf.random.normal(shape)
    for layer in part.layers:
      copy = type(layer).from_config(layer.get_config())
      copy.build(inputs.shape)
      copy.set_weights(layer.get_weights())
      assert copy.get_config() == layer.get_config()
      outputs = layer(inputs)
      np.testing.assert_array_equal(copy(inputs).numpy(), outputs.numpy())
      inputs = outputs


def test_cnn_small_has_the_parameter_budget_of_small():
  """Equal budget: within 5% of small's parameters, with its lambdas, context
  model, entropy model and training settings."""
  small, cnn = config.load("small"), config.load("cnn_small")
  counts = [checkpoint.build_model(c).count_params() for c in (small, cnn)]
  assert counts[0] == SMALL_PARAMETERS
  assert abs(counts[1] / counts[0] - 1) < 0.05, counts
  assert small.train == cnn.train
  shared = ("latent_channels", "num_groups", "hyper_channels", "context_window",
            "context_dim", "context_depth", "context_heads", "context_mode", "mlp_ratio",
            "lambdas", "num_scales", "scale_min", "scale_max")
  assert [getattr(small.model, f) for f in shared] == [getattr(cnn.model, f) for f in shared]


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 4)])
def test_integer_hyper_synthesis_tracks_keras(tiny_cnn, size):
  """The integer h_s (numpy reference): Keras' conv geometry ("same" padding, transposed
  convs), within a few 2^-10 steps of the float layers. (The C core's is the same,
  integer for integer: tests/test_entropy_core.py.)"""
  rng = np.random.default_rng(0)
  z = rng.integers(-6, 7, (1, *size, 16)).astype(np.float64)
  params = entropy_model.unflatten(entropy_model.integer_params(tiny_cnn))
  expected = tiny_cnn.hyper_synthesis(tf.constant(z, tf.float32)).numpy()
  model = entropy_model.IntegerEntropyModel(backends.NUMPY, params, 3, 4, "wavefront")
  got = [model.hyper_features(z * entropy_model.ONE, 4 * size[0], 4 * size[1])]
  assert got[0].shape == expected.shape
  np.testing.assert_allclose(got[0] / entropy_model.ONE, expected, atol=4 / entropy_model.ONE)
  assert np.abs(expected).max() > 0.1  # not a vacuous comparison


def test_quantize_refuses_convolutions_it_cannot_reproduce():
  layer = tf.keras.layers.Conv2DTranspose(4, 5, strides=2, padding="valid")
  layer.build([None, None, None, 3])
  with pytest.raises(ValueError, match="supports square 'same' convolutions"):
    quantize.conv(layer)


def test_trained_tiny_cnn_codes_files_that_decode_exactly(train_dir, tmp_path):
  """2 training steps, then the codec's compress -> decompress: the decoded latents are the
  encoder's (the file's latent check, verified by the TF decoder and by the TF-free numpy
  one) and the image is their synthesis."""
  cfg = config.from_dict(_tiny_cnn_dict())
  trainer = trainer_lib.Trainer(cfg, str(tmp_path), tf.distribute.get_strategy(), seed=0)
  # Eager steps: the same computation without the 20 s trace of the step's graph.
  trainer._train_step = trainer._distributed_step  # pylint: disable=protected-access
  batches = iter(data.train_dataset(str(train_dir), 32, 2, seed=1))
  losses = [trainer.train_step(next(batches))[1]["loss"] for _ in range(2)]
  assert int(trainer.step.numpy()) == 2 and np.all(np.isfinite(losses))
  model = trainer.model.as_float32()  # the codec's arithmetic (training may be bfloat16)
  module = tf_codec.CodecModule(model, cfg.to_json())
  the_codec = tf_codec.Codec(module)
  height, width = 37, 53
  rng = np.random.default_rng(3)
  image = np.clip(rng.normal(128, 40, (height, width, 3)), 0, 255).astype(np.uint8)
  data_bytes = the_codec.compress(image, 0.4)
  decoded = the_codec.decompress(data_bytes)  # TflicError on a latent desync
  header, z_stream, y_stream = bitstream.unpack(data_bytes)
  y_hat = coding_loop.decode(reference.Reference(module.reference_arrays()), z_stream,
                               y_stream, height, width, header.latent_check)
  assert np.count_nonzero(np.round(y_hat / entropy_model.ONE)) > 10  # not all-zero symbols
  quality = header.quality_code / bitstream.QUALITY_STEPS
  x_hat = model.synthesize(tf.constant(y_hat / entropy_model.ONE, tf.float32),
                           model.log_gain(quality))[0, :height, :width].numpy()
  expected = np.round(np.clip(x_hat * 255, 0, 255))
  # Eager kernels may round a last bit differently from the codec's graph.
  np.testing.assert_allclose(decoded, expected, atol=1)
  assert np.mean(decoded == expected) > 0.99
