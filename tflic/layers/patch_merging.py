"""2x downsampling by merging each 2x2 patch of tokens (Swin's patch merging)."""

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="tflic")
class PatchMerging(tf.keras.layers.Layer):
  """[B, H, W, C] -> [B, H/2, W/2, out_dim]: space-to-depth, LayerNorm, linear.

  H and W must be even; the model pads its input so that every stage sees even sizes.
  Use `norm=False` on raw signals (pixels, latents): a LayerNorm over one 2x2 patch would
  discard the patch's brightness and contrast, or the latent's magnitude.
  """

  def __init__(self, out_dim, norm=True, **kwargs):
    super().__init__(**kwargs)
    self.out_dim = out_dim
    self.use_norm = norm
    self.norm = (tf.keras.layers.LayerNormalization(epsilon=1e-5, name="norm")
                 if norm else None)
    self.reduction = tf.keras.layers.Dense(out_dim, use_bias=not norm, name="reduction")

  def call(self, x):
    x = tf.nn.space_to_depth(x, 2)
    return self.reduction(self.norm(x) if self.norm is not None else x)

  def get_config(self):
    config = super().get_config()
    config.update(out_dim=self.out_dim, norm=self.use_norm)
    return config
