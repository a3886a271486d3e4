"""2x upsampling: Swin's patch split (inverse of patch merging), or a sub-pixel conv."""

import tensorflow as tf
from tflic.model.layers.layer_norm import LayerNorm


@tf.keras.utils.register_keras_serializable(package="tflic")
class PatchSplit(tf.keras.layers.Layer):
  """[B, H, W, C] -> [B, 2H, 2W, out_dim]: (LayerNorm), map to 4 * out_dim, depth-to-space.

  The map is linear per token with `kernel_size=None` (Swin's patch split) or an odd
  k x k convolution (a sub-pixel convolution, whose output patches see their
  neighbours). `norm=False` skips the LayerNorm, e.g. on a latent whose magnitude
  carries information.
  """

  def __init__(self, out_dim, norm=True, kernel_size=None, **kwargs):
    super().__init__(**kwargs)
    if kernel_size is not None and kernel_size % 2 != 1:
      raise ValueError(f"kernel_size must be odd or None, got {kernel_size}")
    self.out_dim = out_dim
    self.use_norm = norm
    self.kernel_size = kernel_size
    self.norm = (LayerNorm(epsilon=1e-5, name="norm")
                 if norm else None)
    if kernel_size is None:
      self.expansion = tf.keras.layers.Dense(4 * out_dim, name="expansion")
    else:
      self.expansion = tf.keras.layers.Conv2D(4 * out_dim, kernel_size, padding="same",
                                              name="expansion")

  def call(self, x):
    if self.norm is not None:
      x = self.norm(x)
    return tf.nn.depth_to_space(self.expansion(x), 2)

  def get_config(self):
    config = super().get_config()
    config.update(out_dim=self.out_dim, norm=self.use_norm, kernel_size=self.kernel_size)
    return config
