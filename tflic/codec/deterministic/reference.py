"""The integer entropy model without TensorFlow: numpy only.

`load(path)` reads the `integer_entropy_model.npz` an export writes beside its SavedModel;
`Reference.parameters(z_symbols, y_hat)` computes, teacher-forced, the mean and coding
table of every chunk of a decoded latent, which must equal what the codec's step-by-step
decoder used; `Reference.verify` checks a decoded latent against a file's latent check.
This is the TF-free half of the deterministic design (the on-device decoder builds on it).
"""

import numpy as np

from tflic.codec.deterministic import entropy_model
from tflic.codec.deterministic import latent_check
from tflic.model import backends
from tflic.model import coding_order

FILENAME = "integer_entropy_model.npz"
_CONFIG_KEYS = ("config/window", "config/num_groups", "config/mode", "config/latent_channels",
                "config/hyper_channels")


def context_mask(height, width, num_groups, window, mode):
  """bool [h * w, K, w * w * K]: which window chunks each chunk sees, for all positions
  (row-major) and all groups (`tflic.model.coding_order.context_mask` on numpy)."""
  i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  positions = np.stack([i.ravel(), j.ravel()], -1)
  return coding_order.context_mask(height, width, num_groups, window, mode, positions,
                                   np.arange(num_groups), ops=backends.NUMPY)


class Reference:
  """The integer entropy model of one exported model, on numpy."""

  def __init__(self, flat):
    flat = {k: _from_stored(k, v) for k, v in flat.items()}
    self.window, self.num_groups, mode, self.latent_channels, self.hyper_channels = (
        flat.pop(k) for k in _CONFIG_KEYS)
    self.mode = str(mode)
    self.tables = {k: flat.pop(k) for k in list(flat) if k.startswith("tables/")}
    self.model = entropy_model.IntegerEntropyModel(
        backends.NUMPY, entropy_model.unflatten(flat), int(self.window),
        int(self.num_groups), self.mode)

  def parameters(self, z_symbols, y_hat):
    """(mean, table index) of every chunk of a decoded latent, each [h, w, M].

    z_symbols: int [1, hz, wz, C]; y_hat: the integer latent [1, h, w, M].
    """
    _, height, width, channels = y_hat.shape
    z_hat = (np.asarray(z_symbols, np.float64) * entropy_model.ONE +
             self.tables["tables/z_offset"])
    hyper = self.model.hyper_features(z_hat, height, width)
    i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    positions = np.stack([i.ravel(), j.ravel()], -1).astype(np.int32)
    k = int(self.num_groups)
    mask = context_mask(height, width, k, int(self.window), self.mode)
    mask = np.concatenate([mask, np.ones_like(mask[..., :1])], -1)
    mean, log_scale = self.model.predict(np.asarray(y_hat, np.float64), hyper, positions,
                                         np.arange(k, dtype=np.int32), mask)
    index = self.model.table_index(log_scale)
    return (mean.reshape(height, width, channels), index.reshape(height, width, channels))

  def verify(self, z_symbols, y_hat, check):
    """True if a decoded latent is consistent with this model and the file's check: every
    value lies on its chunk's mean plus a whole symbol, and the check matches."""
    mean, _ = self.parameters(z_symbols, y_hat)
    residual = np.asarray(y_hat[0], np.float64) - mean
    on_grid = np.all(np.mod(residual, entropy_model.ONE) == 0)
    return bool(on_grid) and latent_check.numpy_check(z_symbols, y_hat) == check


def export_arrays(flat_params, tables, config):
  """The npz contents for `Reference`: integer params, coding tables and the config."""
  arrays = {k: np.asarray(v) for k, v in flat_params.items()}
  arrays.update({f"tables/{k}": np.asarray(v) for k, v in tables.items()})
  arrays.update({"config/window": np.int64(config.context_window),
                 "config/num_groups": np.int64(config.num_groups),
                 "config/mode": np.str_(config.context_mode),
                 "config/latent_channels": np.int64(config.latent_channels),
                 "config/hyper_channels": np.int64(config.hyper_channels)})
  return arrays


def _from_stored(key, value):
  """Python numbers from 0-d arrays; network arrays as float64 (how integers are carried)."""
  value = np.asarray(value)
  if value.ndim == 0 and value.dtype.kind in "iu":
    return int(value)
  if value.ndim == 0 and value.dtype.kind == "f":
    return float(value)
  if value.dtype.kind in "iuf" and not key.startswith("tables/"):
    return value.astype(np.float64)
  return value


def load(path):
  """A Reference from an `integer_entropy_model.npz`."""
  with np.load(path) as data:
    return Reference({key: data[key] for key in data.files})
