"""The synthesis g_s on LiteRT: decoded latent -> image, without TensorFlow.

`Synthesis` runs the `synthesis.tflite` that `python -m export.tflite` writes. The model
takes a latent of any size: the interpreter's input is resized whenever the latent size
changes. Its signature (`SIGNATURE`, with the input and output keys below) is the contract
between the exporter and this module.
"""

import os

from ai_edge_litert.interpreter import Interpreter
import numpy as np

from tflic import errors

SIGNATURE = "synthesize"
LATENT = "latent"  # float32 [1, h, w, M]: the integer latent y_hat / 1024
QUALITY = "quality"  # float32 []: the file's quality in [0, 1]
IMAGE = "image"  # float32 [1, 16h, 16w, 3]: centred near 0.5; the caller crops and rounds


def _first_line(error):
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[0] if lines else type(error).__name__


class Synthesis:
  """The synthesis of an exported model, on a LiteRT interpreter.

  Args:
    path: the export's `synthesis.tflite`.
    num_threads: interpreter threads (None: this process's CPUs). XNNPACK's results do
      not depend on them (tests: the same pixels with 1, 2 and 4).
  """

  def __init__(self, path, num_threads=None):
    if not os.path.isfile(path):
      raise errors.TflicError(f"LiteRT model not found: {path}")
    if num_threads is None:  # LiteRT's own default is one thread
      num_threads = len(os.sched_getaffinity(0))
    try:
      self._interpreter = Interpreter(model_path=path, num_threads=num_threads)
      runner = self._interpreter.get_signature_runner(SIGNATURE)
    except ValueError as e:
      raise errors.TflicError(f"cannot load the LiteRT synthesis {path}: "
                              f"{_first_line(e)}") from None
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    if set(inputs) != {LATENT, QUALITY} or set(outputs) != {IMAGE}:
      raise errors.TflicError(f"{path} is not a tflic synthesis: signature {SIGNATURE!r} "
                              f"maps {sorted(inputs)} to {sorted(outputs)}")
    self.tensors = {key: {"name": d["name"], "index": int(d["index"]),
                          "shape": [int(n) for n in d["shape_signature"]],
                          "dtype": np.dtype(d["dtype"]).name}
                    for key, d in [*inputs.items(), *outputs.items()]}
    self.latent_channels = self.tensors[LATENT]["shape"][-1]
    self._latent_shape = None

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
    if np.ndim(quality) != 0 or not 0.0 <= float(quality) <= 1.0:
      raise errors.TflicError(f"quality must be a number in [0, 1], got {quality!r}")
    interpreter = self._interpreter
    try:
      if latent.shape != self._latent_shape:
        self._latent_shape = None  # until the new size is allocated
        interpreter.resize_tensor_input(self.tensors[LATENT]["index"], latent.shape,
                                        strict=True)
        interpreter.allocate_tensors()
        self._latent_shape = latent.shape
      interpreter.set_tensor(self.tensors[LATENT]["index"], latent.astype(np.float32))
      interpreter.set_tensor(self.tensors[QUALITY]["index"], np.array(quality, np.float32))
      interpreter.invoke()
    except RuntimeError as e:
      raise errors.TflicError(f"LiteRT synthesis failed: {_first_line(e)}") from None
    return interpreter.get_tensor(self.tensors[IMAGE]["index"])
