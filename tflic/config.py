"""Model and training configurations, stored as JSON files in configs/.

`load("small")` reads the named file shipped as `tflic.configs`; any other argument is
taken as a path to a JSON file of the same form.
"""

import dataclasses
import json
import os
import pathlib
from importlib import resources

from tflic import errors


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Sizes of the transforms, hyperprior, context model and the rate set.

  With `transform="cnn"` the Swin-only fields (depths, num_heads, window_size,
  hyper_depth, hyper_heads, hyper_window, mlp_ratio of the transforms) are unused; see
  `tflic.model.cnn_transforms`.
  """
  latent_channels: int  # M
  num_groups: int  # K; M must be divisible by K
  embed_dims: tuple  # per analysis stage; synthesis mirrors them
  depths: tuple  # Swin blocks per stage
  num_heads: tuple  # attention heads per stage
  window_size: int  # Swin window of g_a / g_s
  hyper_channels: int  # channels of z
  hyper_dim: int  # width of h_a / h_s
  hyper_depth: int  # Swin blocks in h_a and in h_s
  hyper_heads: int
  hyper_window: int
  context_window: int  # w, odd
  context_dim: int
  context_depth: int
  context_heads: int
  context_mode: str = "wavefront"
  mlp_ratio: float = 2.0
  # 0: Swin's linear patch merging / splitting; odd k: k x k (strided / sub-pixel) convs.
  resample_kernel: int = 0
  # Swin blocks on y at the end of g_a: encoder capacity that leaves the decoder and the
  # bitstream as they are (heads: num_heads[-1]).
  latent_depth: int = 0
  lambdas: tuple = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483)
  num_scales: int = 64
  scale_min: float = 0.11
  scale_max: float = 256.0
  # The transforms g_a, g_s, h_a, h_s (TRANSFORMS): "swin" (the design's), or "cnn", the
  # convolutional ones of tensorflow-compression's examples (GDN, ReLU) as a baseline.
  # Last, so that configs and checkpoints without it stay Swin models.
  transform: str = "swin"


# The kinds of transforms a model can have (ModelConfig.transform).
TRANSFORMS = ("swin", "cnn")
# What training may feed a part of the model in place of the codec's rounding: the latent
# plus uniform noise, or the latent rounded as the codec does (straight-through gradient).
TRAINING_INPUTS = ("noise", "rounded")
# What the rate term may measure: those two, or "split" (TflicModel.call).
RATE_INPUTS = TRAINING_INPUTS + ("split",)
# The networks' arithmetic in training (tflic.model.precision; kept here as data, since the
# config must not import TensorFlow).
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
# The parts of a TflicModel (its attributes) that `train_only` may name.
MODEL_PARTS = ("analysis", "hyper_analysis", "synthesis", "hyper_synthesis", "context",
               "hyperprior", "log_gains")
# The distortions a model can be trained for (tflic.model.distortion).
DISTORTIONS = ("mse", "ms-ssim")
CROPS = ("image", "area")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation and data settings."""
  batch_size: int = 8
  patch_size: int = 128
  # Crops per image and pass (CROPS; `tflic.training.data`): "image", one each, or "area",
  # in proportion to the image's pixels (large photos are seen by their area).
  crops: str = "image"
  learning_rate: float = 1e-4
  warmup_steps: int = 1000
  decay_steps: int = 0  # 0: constant learning rate after warm-up
  clip_norm: float = 1.0
  quantization: str = "noise"  # "noise" or "ste" (for the decoder's input)
  context_input: str = "noise"  # "noise" or "rounded" (the decoder's context, approximated)
  hyper_input: str = "noise"  # "noise" or "rounded" (what the hyper synthesis sees)
  rate_input: str = "noise"  # "noise", "rounded" or "split" (what the rate term measures)
  distortion: str = "mse"  # "mse" or "ms-ssim"
  # Parts (MODEL_PARTS) to train, the rest frozen; empty: all. E.g. the encoder alone
  # ("analysis", "hyper_analysis") keeps the decoder, and so its files, as they are.
  train_only: tuple = ()
  # Relative frequencies with which training draws each of the model's lambdas; empty:
  # uniform. E.g. weighting the high lambdas spends more steps on the high-rate end.
  lambda_weights: tuple = ()
  # Multipliers of each lambda's loss in its steps' gradients; empty: 1 each (the logged
  # losses stay unweighted). The loss at a high lambda is many times that at a low one, so
  # under one optimizer the high lambdas' steps dominate the shared weights' updates; e.g.
  # weights near 1 / (each lambda's loss) give every lambda's steps a like share.
  loss_weights: tuple = ()
  # Decay of an exponential moving average of the weights kept beside them (0: none), e.g.
  # 0.999 averages about the last 1,000 steps; checkpoints hold both, and the export and
  # tools/crop_check can use the average (`checkpoint.restore_model(average=True)`).
  average_decay: float = 0.0
  # The networks' arithmetic in training (`PRECISIONS`): "auto" picks the fastest for
  # the machine (`tflic.model.precision`); variables, rates and the loss stay float32, and
  # exports are float32 whatever trained them.
  precision: str = "auto"
  checkpoint_every: int = 500
  log_every: int = 50
  keep_checkpoints: int = 2


@dataclasses.dataclass(frozen=True)
class Config:
  """A named model plus how to train it."""
  name: str
  model: ModelConfig
  train: TrainConfig

  def to_json(self):
    """The config as a JSON string (stored next to checkpoints and in exports)."""
    return json.dumps(dataclasses.asdict(self), indent=2)


def _tuples(d):
  return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _check_transform(model):
  """TflicError unless `model.transform` is known and its fields fit it."""
  if model.transform not in TRANSFORMS:
    raise errors.TflicError(f"invalid config: unknown transform {model.transform!r}; "
                            f"known: {', '.join(TRANSFORMS)}")
  if model.transform != "cnn":
    return
  if model.embed_dims[-1] != model.latent_channels:
    raise errors.TflicError("invalid config: with transform cnn the fourth stage outputs y: "
                            "embed_dims[3] must equal latent_channels")
  if model.latent_depth or model.resample_kernel:
    raise errors.TflicError("invalid config: latent_depth and resample_kernel are Swin "
                            "options; transform cnn needs both 0")


def from_dict(d):
  """Builds a validated Config from a dict as stored in the JSON files."""
  try:
    model = ModelConfig(**_tuples(d["model"]))
    train = TrainConfig(**_tuples(d.get("train", {})))
  except (KeyError, TypeError) as e:
    raise errors.TflicError(f"invalid config: {e}") from None
  if model.latent_channels % model.num_groups:
    raise errors.TflicError("invalid config: latent_channels must be divisible by num_groups")
  if model.context_window % 2 != 1:
    raise errors.TflicError("invalid config: context_window must be odd")
  if not len(model.embed_dims) == len(model.depths) == len(model.num_heads) == 4:
    raise errors.TflicError("invalid config: embed_dims, depths, num_heads need 4 stages")
  if model.latent_depth and model.latent_channels % model.num_heads[-1]:
    raise errors.TflicError("invalid config: latent_channels must be divisible by "
                            "num_heads[-1] when latent_depth > 0")
  if model.resample_kernel and model.resample_kernel % 2 != 1:
    raise errors.TflicError("invalid config: resample_kernel must be 0 or odd")
  _check_transform(model)
  if model.context_mode not in ("serial", "wavefront"):
    raise errors.TflicError(f"invalid config: unknown context_mode {model.context_mode!r}")
  if train.quantization not in ("noise", "ste") or train.distortion not in DISTORTIONS:
    raise errors.TflicError("invalid config: quantization must be noise|ste, "
                            f"distortion {'|'.join(DISTORTIONS)}")
  for name, allowed in (("context_input", TRAINING_INPUTS), ("hyper_input", TRAINING_INPUTS),
                        ("rate_input", RATE_INPUTS)):
    if getattr(train, name) not in allowed:
      raise errors.TflicError(f"invalid config: {name} must be {'|'.join(allowed)}")
  if train.crops not in CROPS:
    raise errors.TflicError(f"invalid config: crops must be {'|'.join(CROPS)}")
  if train.precision not in PRECISIONS:
    raise errors.TflicError(f"invalid config: precision must be {'|'.join(PRECISIONS)}")
  unknown = set(train.train_only) - set(MODEL_PARTS)
  if unknown:
    raise errors.TflicError(f"invalid config: train_only names unknown parts "
                            f"{', '.join(sorted(unknown))}; known: {', '.join(MODEL_PARTS)}")
  for name in ("lambda_weights", "loss_weights"):
    weights = getattr(train, name)
    if weights and (len(weights) != len(model.lambdas) or min(weights) < 0 or
                    sum(weights) <= 0):
      raise errors.TflicError(f"invalid config: {name} needs {len(model.lambdas)} "
                              "non-negative numbers (one per lambda), not all zero")
  if not 0 <= train.average_decay < 1:
    raise errors.TflicError("invalid config: average_decay must be in [0, 1)")
  return Config(name=d.get("name", "custom"), model=model, train=train)


def _config_dir():
  """configs/ of the source tree, or the installed copy (setup.py maps it to tflic.configs)."""
  source_tree = pathlib.Path(__file__).resolve().parents[1] / "configs"
  if source_tree.is_dir():
    return source_tree
  return resources.files("tflic.configs")


def names():
  """Names of the shipped configs."""
  return sorted(p.name[:-5] for p in _config_dir().iterdir() if p.name.endswith(".json"))


def load(name_or_path):
  """Loads a config by name (a file in configs/) or from a JSON file path."""
  if os.path.exists(name_or_path):
    with open(name_or_path, encoding="utf-8") as f:
      text = f.read()
  else:
    resource = _config_dir() / f"{name_or_path}.json"
    if not resource.is_file():
      raise errors.TflicError(f"no config named {name_or_path!r} and no such file; "
                              f"known: {', '.join(names())}")
    text = resource.read_text(encoding="utf-8")
  try:
    return from_dict(json.loads(text))
  except json.JSONDecodeError as e:
    raise errors.TflicError(f"config {name_or_path} is not valid JSON: {e}") from None
