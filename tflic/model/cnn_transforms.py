"""Convolutional transforms (`transform: "cnn"`): the baseline the Swin ones are held to.

The four transforms of tensorflow-compression's hyperprior examples (Ballé et al. 2018,
`bmshj2018.py`; Minnen et al. 2018, `mbt2018.py`), sized by the same config fields as the
Swin transforms, for the model's other parts (hyperprior, context model, gains, integer
entropy model, bitstream) to stay as they are:
  g_a: four 5x5 convolutions of stride 2, GDN after the first three: image -> y (1/16)
       at widths embed_dims[0], [1], [2], then latent_channels (= embed_dims[3]);
  g_s: its mirror, 5x5 transposed convolutions of stride 2 with inverse GDN;
  h_a: 3x3 conv, ReLU, 5x5 conv / 2, ReLU, 5x5 conv / 2 at hyper_dim: y -> z
       (hyper_channels, 1/4 of y), without bmshj2018's abs(y) since the context model
       predicts means as well as scales (as in mbt2018);
  h_s: 5x5 transposed conv x 2, ReLU, 5x5 transposed conv x 2, ReLU, 3x3 conv: z_hat ->
       hyper_dim features at y's resolution (the Swin h_s's output).
Plain Keras convolutions with "same" zero padding: the codec's integer h_s
(`tflic.codec.deterministic.layers.conv_stack`) recomputes Keras' exact geometry.
"""

import tensorflow as tf
import tensorflow_compression as tfc

from tflic.model.layers.stack import Stack

KERNEL = 5  # g_a, g_s and the resampling convolutions of h_a, h_s
HYPER_KERNEL = 3  # the first conv of h_a and the last of h_s


def _conv(filters, kernel_size, name, strides=1, activation=None):
  """A Keras conv with "same" padding: [B, H, W, .] -> [B, H / strides, W / strides, filters]."""
  return tf.keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                                activation=activation, name=name)


def _up_conv(filters, kernel_size, name, activation=None):
  """A 2x upsampling transposed conv: [B, H, W, .] -> [B, 2H, 2W, filters]."""
  return tf.keras.layers.Conv2DTranspose(filters, kernel_size, strides=2, padding="same",
                                         activation=activation, name=name)


def analysis_transform(config):
  """g_a: image -> y, conv + GDN stages, the last conv to latent_channels without GDN."""
  layers = []
  for i, dim in enumerate(config.embed_dims[:3]):
    layers += [_conv(dim, KERNEL, f"conv{i}", strides=2), tfc.GDN(name=f"gdn{i}")]
  layers.append(_conv(config.latent_channels, KERNEL, "conv3", strides=2))
  return Stack(layers, name="analysis")


def synthesis_transform(config):
  """g_s: y -> image, g_a's mirror: transposed conv + inverse GDN, then to 3 channels."""
  layers = []
  for i in reversed(range(3)):
    layers += [_up_conv(config.embed_dims[i], KERNEL, f"up_conv{i + 1}"),
               tfc.GDN(inverse=True, name=f"igdn{i}")]
  layers.append(_up_conv(3, KERNEL, "up_conv0"))
  return Stack(layers, name="synthesis")


def hyper_analysis_transform(config):
  """h_a: y -> z, two 2x downsamplings."""
  return Stack([
      _conv(config.hyper_dim, HYPER_KERNEL, "conv0", activation="relu"),
      _conv(config.hyper_dim, KERNEL, "conv1", strides=2, activation="relu"),
      _conv(config.hyper_channels, KERNEL, "conv2", strides=2),
  ], name="hyper_analysis")


def hyper_synthesis_transform(config):
  """h_s: z_hat -> hyperprior features [.., hyper_dim] at the resolution of y."""
  return Stack([
      _up_conv(config.hyper_dim, KERNEL, "up_conv0", activation="relu"),
      _up_conv(config.hyper_dim, KERNEL, "up_conv1", activation="relu"),
      _conv(config.hyper_dim, HYPER_KERNEL, "conv2"),
  ], name="hyper_synthesis")
