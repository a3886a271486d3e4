"""Weight initialization and the MLP shared by the transformer layers."""

import tensorflow as tf

from tflic.model.layers.gelu_dense import GeluDense
from tflic.model.layers.stack import Stack


def small_normal():
  """ViT/Swin initialization (truncated normal, std 0.02).

  Residual branches start near zero, so a fresh block is close to the identity and does
  not drown the signal it carries (Glorot-initialized blocks slowed our autoencoders down).
  """
  return tf.keras.initializers.TruncatedNormal(stddev=0.02)


def mlp(dim, mlp_ratio, name="mlp"):
  """The transformer MLP: dim -> dim * mlp_ratio (GELU) -> dim."""
  return Stack([
      GeluDense(int(dim * mlp_ratio), kernel_initializer=small_normal()),
      tf.keras.layers.Dense(dim, kernel_initializer=small_normal()),
  ], name=name)
