"""The split encoder: the float networks on TensorFlow Serving, entropy coding in the client.

`python -m export.serving` writes a `tflic_networks` servable of stock TensorFlow ops, which
a stock tensorflow_model_server serves (it lacks tflic's range coder ops,
so it cannot serve the full codec). `SplitEncoder` sends an image to its `analysis`
signature and entropy-codes the returned latents here, with the codec's C entropy core
(`tflic.codec.rangecoder.entropy_core`). `analysis` runs the in-graph codec's own ops and the
entropy coding is exact integer arithmetic, so the files are byte-identical to
`tflic.codec`'s when the server runs the same TensorFlow build on the same kind of CPU
(elsewhere the float latents may differ in the last bits: the files are then still valid
files, which decode, but not byte-identical ones).

The servable runs either in-process (`LocalServable`: TensorFlow's TF1 session loader, as
TF Serving loads it; needs TensorFlow, not tensorflow-compression) or on a server
(`RestServable`: TF Serving's REST predict API, with urllib and JSON; needs no TensorFlow).
"""

import json
import os
import urllib.error
import urllib.request

import numpy as np

from tflic.codec import bitstream
from tflic.codec.deterministic import reference as reference_lib
from tflic.codec.rangecoder import entropy_core
from tflic.codec import tiling
from tflic import errors

NETWORKS = "tflic_networks"  # the servable's model name
MANIFEST = "manifest.json"  # in the servable's assets/, beside reference_lib.FILENAME
# The servable's signatures: {name: (inputs, outputs)}, each {tensor name: dtype}
# (np.dtype, or str for a text string). REST carries no dtypes; these restore them.
SIGNATURES = {
    "analysis": ({"image": np.uint8, "quality": np.float32},
                 {"y": np.float32, "z": np.float32, "quality_code": np.int32,
                  "fingerprint": str}),
    "hyper_analysis": ({"y": np.float32}, {"z": np.float32}),
    "synthesis": ({"y_hat": np.int32, "quality_code": np.int32, "height": np.int32,
                   "width": np.int32}, {"image": np.uint8}),
}


def _typed(value, dtype):
  """A servable's output as numpy (dtype) or str."""
  if dtype is str:
    return value.decode() if isinstance(value, bytes) else str(value)
  return np.asarray(value, dtype)


class LocalServable:
  """A servable run in this process with TensorFlow's TF1 session loader.

  Args:
    path: the servable's version directory (e.g. BASE/tflic_networks/1).
  """

  def __init__(self, path):
    # Imported here: clients of a remote servable need no TensorFlow.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    self._session = tf.compat.v1.Session(graph=tf.Graph())
    with self._session.graph.as_default():
      try:
        meta_graph = tf.compat.v1.saved_model.loader.load(
            self._session, [tf.saved_model.SERVING], path)
      except (OSError, RuntimeError, tf.errors.OpError) as e:
        raise errors.TflicError(f"cannot load servable {path}: {_first_line(e)}") from None
    self._signatures = dict(meta_graph.signature_def)

  def run(self, signature, inputs):
    """Runs a signature (one of SIGNATURES): {input name: value} -> {output name: numpy
    array or str}."""
    if signature not in SIGNATURES or signature not in self._signatures:
      raise errors.TflicError(f"the servable has no signature {signature!r}")
    definition = self._signatures[signature]
    feed = {definition.inputs[name].name: value for name, value in inputs.items()}
    fetches = {name: info.name for name, info in definition.outputs.items()}
    try:
      outputs = self._session.run(fetches, feed)
    except (ValueError, self._tf.errors.OpError) as e:  # ValueError: a shape that cannot fit
      raise errors.TflicError(f"{signature} failed: {_first_line(e)}") from None
    types = SIGNATURES[signature][1]
    return {name: _typed(value, types[name]) for name, value in outputs.items()}

  def close(self):
    """Frees the session."""
    self._session.close()


class RestServable:
  """A servable on a TF Serving model server, through its REST predict API.

  Args:
    url: the model's REST URL, http://HOST:8501/v1/models/tflic_networks (the latest
      version) or .../tflic_networks/versions/N.
    timeout: seconds to wait for a reply.
  """

  def __init__(self, url, timeout=600.0):
    self.url = url.rstrip("/")
    self.timeout = timeout

  def run(self, signature, inputs):
    """Runs a signature (one of SIGNATURES): {input name: value} -> {output name: numpy
    array or str}."""
    if signature not in SIGNATURES:
      raise errors.TflicError(f"unknown signature {signature!r}")
    input_types, output_types = SIGNATURES[signature]
    # Columnar ("inputs") format: the inputs do not share a batch dimension. A float32
    # input goes out as the double of its exact value, which the server parses back to it.
    body = json.dumps({"signature_name": signature,
                       "inputs": {name: np.asarray(value, input_types[name]).tolist()
                                  for name, value in inputs.items()}}).encode()
    request = urllib.request.Request(self.url + ":predict", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
      with urllib.request.urlopen(request, timeout=self.timeout) as response:
        reply = json.load(response)
    except urllib.error.HTTPError as e:
      raise errors.TflicError(f"TF Serving at {self.url} refused {signature}: "
                              f"{_server_error(e)}") from None
    except (urllib.error.URLError, OSError) as e:
      raise errors.TflicError(f"cannot reach TF Serving at {self.url}: "
                              f"{getattr(e, 'reason', e)}") from None
    except ValueError:
      raise errors.TflicError(f"TF Serving at {self.url} sent a reply that is not JSON") from None
    outputs = reply.get("outputs") if isinstance(reply, dict) else None
    if len(output_types) == 1 and outputs is not None:
      # TF Serving leaves out the name of a signature's only output.
      outputs = {next(iter(output_types)): outputs}
    if not isinstance(outputs, dict) or set(outputs) != set(output_types):
      raise errors.TflicError(f"TF Serving at {self.url} sent no {signature} outputs "
                              f"{sorted(output_types)}")
    # Python's JSON numbers are the nearest doubles to TF Serving's decimals (written to
    # round-trip float32), which round back to the server's float32 values exactly.
    return {name: _typed(value, output_types[name]) for name, value in outputs.items()}


def _server_error(http_error):
  """The `error` message of a TF Serving error reply, else the HTTP status."""
  try:
    return json.loads(http_error.read())["error"]
  except (ValueError, KeyError, TypeError):
    return f"HTTP {http_error.code} {http_error.reason}"


def _first_line(error):
  """The line of a TensorFlow error that says what failed (as tflic.codec's, which this
  module cannot import: it imports tensorflow-compression)."""
  lines = [line.strip() for line in (getattr(error, "message", None) or str(error)).splitlines()]
  for line in lines:
    if line.startswith("assertion failed: ["):
      return line[len("assertion failed: ["):].split("]", 1)[0]
  return next((line for line in lines if line and not line.startswith(
      ("[[", "File ", "Detected at node", "Graph execution error"))), type(error).__name__)


def servable_dir(path):
  """The version directory of the networks servable at `path`: a version directory, a
  model base path (its highest version, as TF Serving serves it) or an export.serving
  output."""
  if os.path.isdir(os.path.join(path, NETWORKS)):
    path = os.path.join(path, NETWORKS)
  if os.path.isfile(os.path.join(path, "saved_model.pb")):
    return path
  versions = ([int(d) for d in os.listdir(path)
               if d.isdigit() and os.path.isfile(os.path.join(path, d, "saved_model.pb"))]
              if os.path.isdir(path) else [])
  if not versions:
    raise errors.TflicError(f"no {NETWORKS} servable at {path}")
  return os.path.join(path, str(max(versions)))


class SplitEncoder:
  """Writes .tflic files with the `analysis` of a tflic_networks servable.

  Args:
    servable: a local servable (see `servable_dir`) or the REST URL of one
      (http://HOST:8501/v1/models/tflic_networks[/versions/N]).
    assets: the directory with the servable's manifest.json and integer_entropy_model.npz
      (its assets/); required for a URL, by default the local servable's own.
    timeout: seconds to wait for a REST reply.
    tile_budget, tile_kept: as in `tflic.codec.Codec`: images larger than one tile are
      analysed tile by tile (`tflic.codec.tiling`), their latent's z by `hyper_analysis`.
  """

  def __init__(self, servable, assets=None, timeout=600.0,
               tile_budget=tiling.DEFAULT_BUDGET_BYTES, tile_kept=None):
    if servable.startswith(("http://", "https://")):
      if assets is None:
        raise errors.TflicError("a remote servable needs assets=DIR: a local copy of its "
                                f"{NETWORKS}/VERSION/assets directory")
      self.servable = RestServable(servable, timeout)
    else:
      path = servable_dir(servable)
      assets = assets or os.path.join(path, "assets")
      self.servable = LocalServable(path)
    try:
      with open(os.path.join(assets, MANIFEST)) as f:
        manifest = json.load(f)
      with np.load(os.path.join(assets, reference_lib.FILENAME)) as data:
        self.core = entropy_core.Core({key: data[key] for key in data.files})
    except (OSError, ValueError, KeyError, entropy_core.CoreError) as e:
      raise errors.TflicError(f"cannot read the servable's assets in {assets}: {e}") from None
    if manifest.get("format_version") != bitstream.VERSION:
      raise errors.TflicError(f"the servable writes tflic format version "
                              f"{manifest.get('format_version')}; this client writes "
                              f"{bitstream.VERSION}")
    self.mode = manifest["mode"]
    self.fingerprint = bytes.fromhex(manifest["fingerprint"])
    self.model_config = manifest["config"]["model"]
    self.tile_budget, self.tile_kept = tile_budget, tile_kept

  def compress(self, image, quality, progress=None):
    """uint8 image [H, W, 3] and quality in [0, 1] -> .tflic file bytes. progress(stage,
    done, total), if given, hears of the analysis tiles and of the coding loop's chunks
    (`tflic.codec.progress`)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
      raise errors.TflicError(f"expected a uint8 RGB image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    if min(height, width) < 1 or max(height, width) > bitstream.MAX_SIDE:
      raise errors.TflicError(f"image size {width}x{height} is outside 1..{bitstream.MAX_SIDE}"
                              " pixels per side")
    bitstream.quality_code(quality)  # validates the range
    # float32 as the in-graph codec takes it; the servable computes the stored quality code
    # with the codec's float32 ops, which Python's rounding of the double could miss.
    tiles = tiling.plan(height, width, self.model_config, self.tile_budget, self.tile_kept)
    if len(tiles) == 1:
      out = self._analysis(image, quality)
    else:
      # The tiles' latents put together, then z of the whole latent (each tile's own z
      # is left unused: the hyper analysis is cheap next to the analysis).
      codes = []

      def analyse(pixels):
        tile_out = self._analysis(pixels, quality)
        codes.append(int(tile_out["quality_code"]))
        return tile_out["y"]

      y = tiling.analyse_tiles(analyse, image, tiles,
                               int(tiling.config_value(self.model_config, "latent_channels")),
                               progress)
      out = {"y": y, "z": self.servable.run("hyper_analysis", {"y": y})["z"],
             "quality_code": codes[0]}
    expected = (1,) + bitstream.latent_grid(height, width)
    if out["y"].shape[:3] != expected:
      raise errors.TflicError(f"the servable returned a latent of shape {out['y'].shape} for "
                              f"a {width}x{height} image")
    coding = self.core.coding_progress(progress, *expected[1:])
    try:
      z_stream, y_stream, check, _ = self.core.encode(out["y"], out["z"], progress=coding)
    except entropy_core.CoreError as e:
      raise errors.TflicError(f"cannot encode the servable's latents: {e}") from None
    return bitstream.pack(self.mode, self.fingerprint, height, width, int(out["quality_code"]),
                          z_stream, y_stream, check)

  def _analysis(self, image, quality):
    out = self.servable.run("analysis", {"image": image, "quality": np.float32(quality)})
    if out["fingerprint"] != self.fingerprint.hex():
      raise errors.TflicError(f"the servable's model ({out['fingerprint']}) is not the one "
                              f"of the assets ({self.fingerprint.hex()})")
    return out
