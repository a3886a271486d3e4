"""The networks on LiteRT, without TensorFlow: the synthesis g_s and the analysis g_a + h_a.

`Synthesis` runs the `synthesis.tflite` and `Analysis` the `analysis.tflite` that
`python -m export.tflite` writes. Both take inputs of any size: the interpreter's inputs
are resized whenever the size changes. Their signatures (`SIGNATURE` and
`ANALYSIS_SIGNATURE`, with the input and output keys below) are the contract between the
exporter and this module.
"""

import contextlib
import os
import sys

from ai_edge_litert.interpreter import Interpreter
import numpy as np

from tflic import errors

SIGNATURE = "synthesize"
ANALYSIS_SIGNATURE = "analyze"
LATENT = "latent"  # float32 [1, h, w, M]: the synthesis' input (integer latent / 1024),
# and the analysis' output (the gained y the codec quantizes)
QUALITY = "quality"  # float32 []: the quality in [0, 1]
IMAGE = "image"  # float32: the synthesis' output [1, 16h, 16w, 3], centred near 0.5 (the
# caller crops and rounds), and the analysis' input [1, H, W, 3], pixels / 255
HYPER_LATENT = "hyper_latent"  # float32 [1, ceil(h/4), ceil(w/4), C]: z = h_a(y)


def _first_line(error):
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[0] if lines else type(error).__name__


@contextlib.contextmanager
def _without_info_lines():
  """Sends file descriptor 2 to /dev/null for a block: LiteRT's C++ prints an INFO line
  ("Created TensorFlow Lite XNNPACK delegate") on a network's first allocation. Its
  errors still arrive, as the RuntimeError's message."""
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, "wb") as null:
      os.dup2(null.fileno(), 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


class _Network:
  """A LiteRT network with a named signature; inputs of any size."""

  SIGNATURE = None
  INPUTS = ()
  OUTPUTS = ()
  KIND = None

  def __init__(self, path, num_threads=None):
    if not os.path.isfile(path):
      raise errors.TflicError(f"LiteRT model not found: {path}")
    if num_threads is None:  # LiteRT's own default is one thread
      num_threads = len(os.sched_getaffinity(0))
    try:
      self._interpreter = Interpreter(model_path=path, num_threads=num_threads)
      runner = self._interpreter.get_signature_runner(self.SIGNATURE)
    except ValueError as e:
      raise errors.TflicError(f"cannot load the LiteRT {self.KIND} {path}: "
                              f"{_first_line(e)}") from None
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    if set(inputs) != set(self.INPUTS) or set(outputs) != set(self.OUTPUTS):
      raise errors.TflicError(f"{path} is not a tflic {self.KIND}: signature "
                              f"{self.SIGNATURE!r} maps {sorted(inputs)} to {sorted(outputs)}")
    self.signature = self.SIGNATURE
    self.tensors = {key: {"name": d["name"], "index": int(d["index"]),
                          "shape": [int(n) for n in d["shape_signature"]],
                          "dtype": np.dtype(d["dtype"]).name}
                    for key, d in [*inputs.items(), *outputs.items()]}
    self._input_shape = None
    self._allocated = False

  def _invoke(self, main, quality):
    """Runs the network on `main` (float32, the first input) at `quality`; returns the
    outputs in OUTPUTS order."""
    if np.ndim(quality) != 0 or not 0.0 <= float(quality) <= 1.0:
      raise errors.TflicError(f"quality must be a number in [0, 1], got {quality!r}")
    interpreter = self._interpreter
    index = self.tensors[self.INPUTS[0]]["index"]
    try:
      if main.shape != self._input_shape:
        self._input_shape = None  # until the new size is allocated
        interpreter.resize_tensor_input(index, main.shape, strict=True)
        with _without_info_lines() if not self._allocated else contextlib.nullcontext():
          interpreter.allocate_tensors()
        self._allocated = True
        self._input_shape = main.shape
      interpreter.set_tensor(index, main.astype(np.float32))
      interpreter.set_tensor(self.tensors[QUALITY]["index"], np.array(quality, np.float32))
      interpreter.invoke()
    except RuntimeError as e:
      raise errors.TflicError(f"LiteRT {self.KIND} failed: {_first_line(e)}") from None
    return [interpreter.get_tensor(self.tensors[key]["index"]) for key in self.OUTPUTS]


class Synthesis(_Network):
  """The synthesis of an exported model, on a LiteRT interpreter.

  Args:
    path: the export's `synthesis.tflite`.
    num_threads: interpreter threads (None: this process's CPUs). XNNPACK's results do
      not depend on them (tests: the same pixels with 1, 2 and 4).
  """

  SIGNATURE = SIGNATURE
  INPUTS = (LATENT, QUALITY)
  OUTPUTS = (IMAGE,)
  KIND = "synthesis"

  def __init__(self, path, num_threads=None):
    super().__init__(path, num_threads)
    self.latent_channels = self.tensors[LATENT]["shape"][-1]

  def __call__(self, latent, quality):
    """The image [1, 16h, 16w, 3] (float32) of a latent [1, h, w, M] at a quality.

    latent: the decoded integer latent divided by 1024 (any float dtype). quality: the
    file's quality in [0, 1].
    """
    latent = np.asarray(latent)
    channels = self.latent_channels
    if latent.dtype.kind != "f":
      raise errors.TflicError(f"the latent must be float (the integer latent / 1024), got "
                              f"{latent.dtype}")
    if latent.ndim != 4 or latent.shape[0] != 1 or latent.shape[3] != channels or (
        min(latent.shape[1:3]) < 1):
      raise errors.TflicError(f"expected a latent of shape [1, h, w, {channels}] with h, w "
                              f">= 1, got {list(latent.shape)}")
    return self._invoke(latent, quality)[0]


class Analysis(_Network):
  """The encoder's networks of an exported model (g_a, the gains, h_a) on LiteRT.

  Args:
    path: the export's `analysis.tflite`.
    num_threads: interpreter threads (None: this process's CPUs).
  """

  SIGNATURE = ANALYSIS_SIGNATURE
  INPUTS = (IMAGE, QUALITY)
  OUTPUTS = (LATENT, HYPER_LATENT)
  KIND = "analysis"
  STRIDE = 16

  def __call__(self, image, quality):
    """(y [1, H/16, W/16, M], z [1, ceil(H/64), ceil(W/64), C]), float32, of an image
    [1, H, W, 3] (float32 pixels / 255; H, W multiples of 16) at a quality."""
    image = np.asarray(image)
    if (image.dtype != np.float32 or image.ndim != 4 or image.shape[0] != 1 or
        image.shape[3] != 3 or min(image.shape[1:3]) < 1 or
        image.shape[1] % self.STRIDE or image.shape[2] % self.STRIDE):
      raise errors.TflicError(f"expected a float32 image of shape [1, H, W, 3] with H, W "
                              f"multiples of {self.STRIDE}, got {image.dtype} "
                              f"{list(image.shape)}")
    return tuple(self._invoke(image, quality))


NETWORKS = {"synthesis": Synthesis, "analysis": Analysis}
