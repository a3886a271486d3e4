"""2x downsampling: Swin's patch merging, or its overlapping variant, a strided conv."""

import tensorflow as tf
from tflic.model.layers.layer_norm import LayerNorm


@tf.keras.utils.register_keras_serializable(package="tflic")
class PatchMerging(tf.keras.layers.Layer):
  """[B, H, W, C] -> [B, H/2, W/2, out_dim].

  With `kernel_size=None` this is Swin's patch merging: space-to-depth, LayerNorm, linear.
  With an odd `kernel_size` k it is a k x k convolution of stride 2 (the strided-conv
  option of DESIGN.md), whose output tokens see overlapping patches.

  H and W must be even; the model pads its input so that every stage sees even sizes.
  Use `norm=False` on raw signals (pixels, latents): a LayerNorm over one 2x2 patch would
  discard the patch's brightness and contrast, or the latent's magnitude.
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
      self.reduction = tf.keras.layers.Dense(out_dim, use_bias=not norm, name="reduction")
    else:
      self.reduction = tf.keras.layers.Conv2D(out_dim, kernel_size, strides=2, padding="same",
                                              use_bias=not norm, name="reduction")

  def call(self, x):
    if self.kernel_size is None:
      x = tf.nn.space_to_depth(x, 2)
    return self.reduction(self.norm(x) if self.norm is not None else x)

  def get_config(self):
    config = super().get_config()
    config.update(out_dim=self.out_dim, norm=self.use_norm, kernel_size=self.kernel_size)
    return config
