"""Analysis / synthesis transforms (g_a, g_s) and hyperprior transforms (h_a, h_s).

All four are stacks of Swin blocks between 2x resampling layers. The resampling layers
have no LayerNorm: normalizing a token before a linear resampling throws away its
magnitude, and with it most of the image (measured: a Swin autoencoder with normed
resampling stalled at ~12 dB PSNR for its first 600 steps; without, 20 dB after 200). g_a maps an image
[B, H, W, 3] in [0, 1] to the latent y [B, H/16, W/16, M]; h_a maps y to z at a further
1/4 resolution. Blocks alternate regular and shifted windows.

A config with `transform: "cnn"` gets the convolutional transforms of
`tflic.model.cnn_transforms` instead (the four public functions here dispatch on it).
"""

import tensorflow as tf

from tflic.model import cnn_transforms
from tflic.model.layers import PatchMerging, PatchSplit, Stack, SwinBlock
from tflic.model import precision


def _is_cnn(config):
  return config.transform == "cnn"


def _swin_stage(dim, depth, num_heads, window_size, mlp_ratio, name):
  return [SwinBlock(dim, num_heads, window_size, shift=i % 2 == 1, mlp_ratio=mlp_ratio,
                    name=f"{name}_block{i}") for i in range(depth)]


def _resample_kernel(config):
  return config.resample_kernel or None


def analysis_transform(config):
  """g_a: image -> y, four 2x downsampling stages."""
  if _is_cnn(config):
    return cnn_transforms.analysis_transform(config)
  layers = []
  for i, (dim, depth, heads) in enumerate(
      zip(config.embed_dims, config.depths, config.num_heads)):
    with precision.policy("float32" if i == 0 else None):  # pixels in: 8 bits of mantissa
      layers.append(PatchMerging(dim, norm=False, kernel_size=_resample_kernel(config),
                                 name=f"merge{i}"))
    layers += _swin_stage(dim, depth, heads, config.window_size, config.mlp_ratio, f"stage{i}")
  # The latent's own layers compute in float32 under a mixed policy: bfloat16's 8-bit
  # mantissa would round y by up to a quantization step at high rates.
  with precision.policy("float32"):
    layers.append(tf.keras.layers.Dense(config.latent_channels, name="to_latent"))
    # Last, so that a model grown by them still restores the checkpoints of the one without.
    layers += _swin_stage(config.latent_channels, config.latent_depth, config.num_heads[-1],
                          config.window_size, config.mlp_ratio, "latent")
  return Stack(layers, name="analysis")


def synthesis_transform(config):
  """g_s: y -> image, mirroring g_a with four 2x upsampling stages."""
  if _is_cnn(config):
    return cnn_transforms.synthesis_transform(config)
  with precision.policy("float32"):  # y_hat in, pixels out: see analysis_transform
    layers = [tf.keras.layers.Dense(config.embed_dims[-1], name="from_latent")]
  for i in reversed(range(4)):
    layers += _swin_stage(config.embed_dims[i], config.depths[i], config.num_heads[i],
                          config.window_size, config.mlp_ratio, f"stage{i}")
    out_dim = config.embed_dims[i - 1] if i else 3
    with precision.policy("float32" if i == 0 else None):
      layers.append(PatchSplit(out_dim, norm=False, kernel_size=_resample_kernel(config),
                               name=f"split{i}"))
  return Stack(layers, name="synthesis")


def _hyper_transform(config, resample, out_dim, name):
  """resample -> Swin blocks -> resample, at the hyperprior's width."""
  layers = [resample(config.hyper_dim, norm=False, kernel_size=_resample_kernel(config),
                     name="resample0")]
  layers += _swin_stage(config.hyper_dim, config.hyper_depth, config.hyper_heads,
                        config.hyper_window, config.mlp_ratio, "stage")
  with precision.policy("float32"):  # z, which is quantized, in float32
    layers.append(resample(out_dim, norm=False, kernel_size=_resample_kernel(config),
                           name="resample1"))
  return Stack(layers, name=name)


def hyper_analysis_transform(config):
  """h_a: y -> z, two 2x downsamplings."""
  if _is_cnn(config):
    return cnn_transforms.hyper_analysis_transform(config)
  return _hyper_transform(config, PatchMerging, config.hyper_channels, "hyper_analysis")


def hyper_synthesis_transform(config):
  """h_s: z_hat -> hyperprior features [.., hyper_dim] at the resolution of y."""
  if _is_cnn(config):
    return cnn_transforms.hyper_synthesis_transform(config)
  return _hyper_transform(config, PatchSplit, config.hyper_dim, "hyper_synthesis")
