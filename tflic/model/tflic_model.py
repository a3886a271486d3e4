"""The tflic model: Swin transforms, hyperprior, chunk context model, variable rate.

`TflicModel` is a Keras model whose `__call__` is the parallel training pass. It also
exposes the pieces the codec reuses (`analysis`, `hyperprior`, the context model, the
scale <-> index mapping), so that training and coding share every computation.
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc

from tflic import config as config_lib
from tflic.model import context_model
from tflic.model import precision
from tflic.model import transforms
from tflic.model.layers import fused_ops

# The latent y is 1/16 of the image; z is 1/4 of y.
LATENT_STRIDE = 16
HYPER_STRIDE = 4


def pad_to_multiple(x, multiple):
  """Pads [B, H, W, C] at the bottom/right by edge replication to multiples of `multiple`.

  Edge replication (unlike zeros) adds no new content, so the padding costs few bits.
  """
  shape = tf.shape(x)
  height, width = shape[1], shape[2]
  padded_height = (height + multiple - 1) // multiple * multiple
  padded_width = (width + multiple - 1) // multiple * multiple
  rows = tf.minimum(tf.range(padded_height), height - 1)
  cols = tf.minimum(tf.range(padded_width), width - 1)
  return tf.gather(tf.gather(x, rows, axis=1), cols, axis=2)


def _float32(x):
  return tf.cast(x, tf.float32)


class TflicModel(tf.keras.Model):
  """Learned image codec model (see DESIGN.md).

  Args:
    config: a `tflic.config.ModelConfig`.
    networks_dtype: the arithmetic of the networks (transforms and context model):
      float32, or bfloat16 / float16 for training (`tflic.model.precision`). Variables, the
      latents, rates and everything the coder reads are float32 either way.
  """

  def __init__(self, config, networks_dtype="float32", **kwargs):
    super().__init__(**kwargs)
    self.config = config
    self.num_lambdas = len(config.lambdas)
    self.networks_dtype = networks_dtype
    with precision.policy(networks_dtype):
      self.analysis = transforms.analysis_transform(config)
      self.synthesis = transforms.synthesis_transform(config)
      self.hyper_analysis = transforms.hyper_analysis_transform(config)
      self.hyper_synthesis = transforms.hyper_synthesis_transform(config)
      self.context = context_model.ContextTransformer(
          num_groups=config.num_groups,
          group_channels=config.latent_channels // config.num_groups,
          window=config.context_window, dim=config.context_dim, depth=config.context_depth,
          num_heads=config.context_heads, mlp_ratio=config.mlp_ratio,
          mode=config.context_mode, name="context")
    self.hyperprior = tfc.NoisyDeepFactorized(batch_shape=[config.hyper_channels])
    self.lambdas = tf.constant(config.lambdas, tf.float32)
    # Per-lambda channel gains on y (Cui et al., "Asymmetric gained deep image compression").
    self.log_gains = tf.Variable(
        tf.tile(self._gain_spread()[:, None], [1, config.latent_channels]), name="log_gains")
    self._log_scale_min = math.log(config.scale_min)
    self._log_scale_step = (math.log(config.scale_max) - math.log(config.scale_min)) / (
        config.num_scales - 1)

  def as_float32(self):
    """This model if its networks compute in float32, else a float32 model with the same
    weights: what codecs and exports need (their integers follow from float32 maths)."""
    if self.networks_dtype == "float32":
      return self
    copy = TflicModel(self.config)
    copy(tf.zeros([1, 64, 64, 3]), 0.0, training=True)  # makes its variables
    for mine, theirs in zip(copy.variables, self.variables):
      mine.assign(theirs)
    return copy

  # -- rate control -----------------------------------------------------------------------

  def _interpolate(self, table, quality):
    """Rows of a per-lambda table at a continuous quality in [0, 1], linearly."""
    t = tf.clip_by_value(tf.cast(quality, tf.float32), 0.0, 1.0) * (self.num_lambdas - 1)
    lower = tf.minimum(tf.cast(tf.floor(t), tf.int32), self.num_lambdas - 2)
    a = t - tf.cast(lower, tf.float32)
    return (1 - a) * table[lower] + a * table[lower + 1]

  def log_gain(self, quality):
    """Log-gain vector [M] for a continuous quality in [0, 1] (log-linear interpolation)."""
    return self._interpolate(self.log_gains, quality)

  def lambda_of(self, quality):
    """The lambda a quality trades at, interpolated in log space like the gains."""
    return tf.exp(self._interpolate(tf.math.log(self.lambdas), quality))

  def _gain_spread(self):
    """Log-gain offsets of the lambdas at the high-rate optimum (step ~ 1/sqrt(lambda)).

    Gains start there because Adam moves them by at most the learning rate per step:
    from equal gains, the lambdas stay alike for thousands of steps.
    """
    log_lambdas = tf.math.log(self.lambdas)
    return 0.5 * (log_lambdas - tf.reduce_mean(log_lambdas))

  def respread_gains(self):
    """Resets the spread of the gains across lambdas, keeping each channel's mean gain.

    For checkpoints trained from equal initial gains, whose spread is still too narrow.
    """
    mean = tf.reduce_mean(self.log_gains, axis=0, keepdims=True)
    self.log_gains.assign(mean + self._gain_spread()[:, None])

  def regain(self, log_gains, lambdas):
    """Sets the gains from those of a model trained at other `lambdas`.

    Each of this model's lambdas gets the source's log-gains interpolated linearly in
    log lambda, and extrapolated from the two nearest beyond the source's range (the
    high-rate optimum is linear there too; see `_gain_spread`). Lets a trained model
    start a fine-tune with a wider or denser rate set.
    """
    log_from = np.log(np.asarray(lambdas, np.float64))
    if log_from.size < 2 or np.any(np.diff(log_from) <= 0):
      raise ValueError(f"need two or more increasing lambdas, got {list(lambdas)}")
    log_to = np.log(np.asarray(self.config.lambdas, np.float64))
    lower = np.clip(np.searchsorted(log_from, log_to) - 1, 0, log_from.size - 2)
    a = (log_to - log_from[lower]) / (log_from[lower + 1] - log_from[lower])
    gains = np.asarray(log_gains, np.float64)
    self.log_gains.assign((1 - a[:, None]) * gains[lower] + a[:, None] * gains[lower + 1])

  def quality_of(self, lambda_index):
    """The quality at which the gains equal those of lambda number `lambda_index`."""
    return tf.cast(lambda_index, tf.float32) / (self.num_lambdas - 1)

  # -- entropy model pieces ---------------------------------------------------------------

  def scale_fn(self, index):
    """Gaussian scale for a (float) table index."""
    return tf.exp(self._log_scale_min + self._log_scale_step * index)

  def scale_index(self, log_scale):
    """Float table index of a predicted log-scale; the coder truncates it to int.

    The index is bounded to the table, but a gradient that would bring a prediction
    beyond the bounds back inside still reaches it (tfc's "identity_if_towards", as tfc
    bounds its own indexes): with `tf.clip_by_value` a scale predicted below the smallest
    got no gradient at all, so a latent that the context model wrongly held certain to be
    zero could never teach it otherwise. `medium_hifi` at step 14,750 predicted 93% of
    its scales at quality 0 below 0.2, and spent 9.8 bits on each non-zero latent there
    (small, 3.6).
    """
    index = (log_scale - self._log_scale_min) / self._log_scale_step
    index = tfc.lower_bound(index, 0.0, gradient="identity_if_towards")
    return tfc.upper_bound(index, self.config.num_scales - 1.0, gradient="identity_if_towards")

  def table_scale_fn(self, index):
    """Gaussian scale of coding table `index`: the centre (in log space) of the scales
    whose float index truncates to it.

    Tables at the bucket's lower edge, scale_fn(index), code every value with a scale up
    to 12% too small; on five Kodak images that cost 0.9% more bytes at quality 0 (0.15%
    at quality 1) than the centred tables, whose files are within 0.2% of the ideal bits
    plus the header.
    """
    return self.scale_fn(index + 0.5)

  def latent_entropy_model(self, compression=False):
    """tfc model for y's chunks: discretized Gaussians indexed by scale.

    Without compression (training, ideal bits) the float index gives the exact predicted
    scale; with compression the range-coding tables are built at `table_scale_fn`.
    """
    return tfc.LocationScaleIndexedEntropyModel(
        tfc.NoisyNormal, self.config.num_scales,
        self.table_scale_fn if compression else self.scale_fn, coding_rank=3,
        compression=compression)

  def hyper_entropy_model(self, compression=False):
    """tfc model for z: the learned factorized prior."""
    return tfc.ContinuousBatchedEntropyModel(self.hyperprior, coding_rank=3,
                                             compression=compression)

  def hyper_features(self, z_hat, latent_height, latent_width):
    """h_s(z_hat), cropped to the latent grid."""
    return _float32(self.hyper_synthesis(z_hat)[:, :latent_height, :latent_width])

  def analyze(self, x):
    """g_a(x) in float32 (whatever the networks compute in)."""
    return _float32(self.analysis(x))

  def hyper_latent(self, y):
    """h_a(y), with y padded to a multiple of the hyper stride."""
    return _float32(self.hyper_analysis(pad_to_multiple(y, HYPER_STRIDE)))

  def synthesize(self, y_hat, log_gain):
    """g_s on the un-gained latent; images are centred on 0.5 so training starts grey."""
    return _float32(self.synthesis(y_hat * tf.exp(-log_gain))) + 0.5

  # -- passes -----------------------------------------------------------------------------

  def call(self, x, quality, training=True, quantization="noise", context_input="noise",
           hyper_input="noise", rate_input="noise"):
    """Parallel (teacher-forced) pass for training.

    Args:
      x: float images [B, H, W, 3] in [0, 1], H and W multiples of 16.
      quality: scalar in [0, 1].
      training: if True, uniform noise stands in for quantization (as far as the
        options below keep it); if False, y and z are rounded. Either way this is an
        approximation of the coder, whose context sees y rounded around means that
        depend on earlier chunks (`coded_forward` is exact).
      quantization: "noise" or "ste": what the synthesis sees in training.
      context_input: what the context model sees. "noise": y plus uniform noise in
        training, round(y) otherwise. "rounded": y rounded around the means of a first
        context pass, as the decoder's context is (see `rounded_context`).
      hyper_input: what the hyper synthesis sees in training. "noise": z plus uniform
        noise; "rounded": z quantized as by the codec, with a straight-through gradient.
      rate_input: what bits_y and bits_z are measured on in training. "noise": the
        density of the latents plus uniform noise (which exceeds the coded bits where
        scales are small); "rounded": the probabilities of the rounded latents, i.e. the
        coded bits, with a straight-through gradient; "split" (y only; z as "noise"): the
        coded bits, y's gradient from the noisy density at the predicted means and scales,
        theirs from the coded bits. The noisy density, minimised over a scale, drives the
        scales of zeros below any table and charges a surprise there a fraction of its
        cost; the coded bits are what the scales should fit.

    Returns:
      dict with x_hat, bits_y and bits_z [B], y, y_hat, mean, log_scale.
    """
    for name, value, allowed in (
        ("context_input", context_input, config_lib.TRAINING_INPUTS),
        ("hyper_input", hyper_input, config_lib.TRAINING_INPUTS),
        ("rate_input", rate_input, config_lib.RATE_INPUTS)):
      if value not in allowed:
        raise ValueError(f"{name} must be {' or '.join(allowed)}, got {value!r}")
    split_rate = training and rate_input == "split"
    noisy_rate = training and rate_input in ("noise", "split")
    log_gain = self.log_gain(quality)
    y = self.analyze(x) * tf.exp(log_gain)
    z = self.hyper_latent(y)
    hyper_model = self.hyper_entropy_model()
    z_tilde, bits_z = hyper_model(z, training=noisy_rate)
    if training and hyper_input == "rounded":
      z_tilde = hyper_model.quantize(z)
    elif training and not noisy_rate:
      z_tilde = z + tf.random.uniform(tf.shape(z), -0.5, 0.5)
    hyper = self.hyper_features(z_tilde, tf.shape(y)[1], tf.shape(y)[2])
    if training:
      y_context = y + tf.random.uniform(tf.shape(y), -0.5, 0.5)
    else:
      y_context = tf.round(y)
    if context_input == "rounded":
      y_context = self.rounded_context(y, y_context, hyper)
    mean, log_scale = self.context(y_context, hyper)
    # Under "split" the noisy density is y's rate only: the parameters learn from the coded bits.
    rate_mean, rate_log_scale = ((tf.stop_gradient(mean), tf.stop_gradient(log_scale))
                                 if split_rate else (mean, log_scale))
    entropy_model = self.latent_entropy_model()
    if noisy_rate and fused_ops.enabled(tf.float32):
      y_tilde, bits_y = self._fused_noisy_rate(y, rate_mean, rate_log_scale)
    else:
      y_tilde, bits_y = entropy_model(
          y, self.scale_index(rate_log_scale), loc=rate_mean, training=noisy_rate)
    if split_rate:
      _, coded = entropy_model(
          tf.stop_gradient(y), self.scale_index(log_scale), loc=mean, training=False)
      bits_y = (tf.stop_gradient(coded) + bits_y - tf.stop_gradient(bits_y)
                + coded - tf.stop_gradient(coded))
    if training and quantization == "ste":
      y_tilde = tfc.round_st(y - mean) + mean
    elif training and not noisy_rate:
      y_tilde = y + tf.random.uniform(tf.shape(y), -0.5, 0.5)
    x_hat = self.synthesize(y_tilde, log_gain)
    return dict(x_hat=x_hat, bits_y=bits_y, bits_z=bits_z, y=y, y_hat=y_tilde, mean=mean,
                log_scale=log_scale)

  def _fused_noisy_rate(self, y, mean, log_scale):
    """(y_tilde, bits_y) of `latent_entropy_model()(y, scale_index(log_scale), loc=mean,
    training=True)`, with the Gaussian's log-probability by one fused CPU kernel each way.

    tfc computes it with tensorflow-probability's log_ndtr: some 800 ops over the whole
    latent, forward and backward, ~8% of medium's CPU training step (76 of 940 ms) for a
    small tensor. The noise is drawn as tfc draws it, and the scale goes through the same
    index clip and exp: the function and its gradients are tfc's, up to float32 rounding.
    """
    u = (y - mean) + tf.random.uniform(tf.shape(y), minval=-.5, maxval=.5, dtype=y.dtype)
    log_prob = fused_ops.noisy_normal_log_prob(u, self.scale_fn(self.scale_index(log_scale)))
    bits = tf.reduce_sum(log_prob, axis=(1, 2, 3)) / -math.log(2.0)
    return u + mean, bits

  def rounded_context(self, y, first_context, hyper):
    """y rounded around the means predicted from `first_context`: the decoder's context.

    The decoder's context holds round(y - mean) + mean, with each chunk's mean predicted
    from the chunks before it; one parallel pass on an approximation of y gives those
    means closely. The gradient reaches y straight through the rounding, as through
    noise, but not the first pass.
    """
    mean, _ = self.context(tf.stop_gradient(first_context), hyper)
    mean = tf.stop_gradient(mean)
    return y + tf.stop_gradient(tf.round(y - mean) + mean - y)

  def coded_forward(self, x, quality):
    """The codec's sequential quantization with this float model, without writing bits.

    The codec itself predicts with the integer entropy model
    (`tflic.codec.CodecModule.coded_forward`), whose means and scales differ from these
    by the weights' and activations' fixed-point rounding; this float counterpart is what
    training approximates. x: float images [B, H, W, 3] in [0, 1], H and W multiples of
    16. Returns a dict with x_hat, y, y_hat, z_hat, mean, log_scale and the ideal bits of
    y and z.
    """
    log_gain = self.log_gain(quality)
    y = self.analyze(x) * tf.exp(log_gain)
    z_hat = self.hyper_entropy_model().quantize(self.hyper_latent(y))
    hyper = self.hyper_features(z_hat, tf.shape(y)[1], tf.shape(y)[2])
    k = self.config.num_groups

    def quantize_step(state, positions, group, mean, log_scale):
      del log_scale
      y_chunks = context_model.gather_group(y, positions, group, k)
      return state, tf.round(y_chunks - mean) + mean

    y_hat, _ = context_model.coding_loop(
        lambda y_hat, positions, groups: self.context.predict(y_hat, hyper, positions, groups),
        [tf.shape(y)[0], tf.shape(y)[1], tf.shape(y)[2], self.config.latent_channels], k,
        self.context.mode, quantize_step, ())
    mean, log_scale = self.context(y_hat, hyper)
    _, bits_y = self.latent_entropy_model()(
        y_hat, self.scale_index(log_scale), loc=mean, training=False)
    _, bits_z = self.hyper_entropy_model()(z_hat, training=False)
    x_hat = self.synthesize(y_hat, log_gain)
    return dict(x_hat=x_hat, y=y, y_hat=y_hat, z_hat=z_hat, mean=mean, log_scale=log_scale,
                bits_y=bits_y, bits_z=bits_z)

  def reconstruct(self, x, quality, coded=True):
    """Compresses and reconstructs images of any size (no bitstream): [B, H, W, 3] in [0, 1].

    The input is padded to a multiple of 16 by edge replication and the output cropped
    back. With `coded=True` the latent is quantized in coding order as by the codec
    (with the float entropy model, see `coded_forward`); otherwise by the faster
    parallel approximation with the decoder-like rounded context, whose bits are close to the coded ones (round(y) as context underestimates
    them, by up to 19% at low rates on Kodak). Returns (x_hat, bits).
    """
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    padded = pad_to_multiple(x, LATENT_STRIDE)
    if coded:
      out = self.coded_forward(padded, quality)
    else:
      out = self(padded, quality, training=False, context_input="rounded")
    return out["x_hat"][:, :height, :width], out["bits_y"] + out["bits_z"]
