"""2x upsampling by splitting each token into a 2x2 patch (inverse of patch merging)."""

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="tflic")
class PatchSplit(tf.keras.layers.Layer):
  """[B, H, W, C] -> [B, 2H, 2W, out_dim]: LayerNorm, linear to 4 * out_dim, depth-to-space.

  `norm=False` skips the LayerNorm, e.g. on a latent whose magnitude carries information.
  """

  def __init__(self, out_dim, norm=True, **kwargs):
    super().__init__(**kwargs)
    self.out_dim = out_dim
    self.use_norm = norm
    self.norm = (tf.keras.layers.LayerNormalization(epsilon=1e-5, name="norm")
                 if norm else None)
    self.expansion = tf.keras.layers.Dense(4 * out_dim, name="expansion")

  def call(self, x):
    if self.norm is not None:
      x = self.norm(x)
    return tf.nn.depth_to_space(self.expansion(x), 2)

  def get_config(self):
    config = super().get_config()
    config.update(out_dim=self.out_dim, norm=self.use_norm)
    return config
