r"""Exports a model as a TensorFlow Serving model base path.

  python -m export.serving --model=MODEL --out=BASE [--serving_root=/models]

MODEL is an export or a training directory (default: the bundled model). BASE gets

  tflic_networks/1/  a SavedModel of stock TensorFlow ops only, which a stock
                     tensorflow_model_server serves: the float networks, as the signatures
                     `analysis`, `hyper_analysis` and `synthesis`; the client entropy-codes
                     (`tflic.deploy.serving_client.SplitEncoder`). assets/ holds manifest.json
                     and integer_entropy_model.npz, what the client codes with.
  tflic_codec/1/     the full codec (`tflic.deploy.savedmodel.export`: compress / decompress with
                     tflic's range coder ops, tflic/codec/rangecoder/_tf_ops.cc), for a model
                     server with those ops linked in (export/serving_with_ops/).
  models.config      TF Serving's --model_config_file for both, with base paths under
                     --serving_root (/models: where the tensorflow/serving Docker image
                     looks, and where BASE is mounted in the commands of README.md).
  README.md          how to serve them and call them over REST and gRPC.

`analysis` runs the ops of `CodecModule._analyse` and its hyper analysis (the C core
clips the hyper latent as the client's coder does), and `synthesis` those of `CodecModule.decompress` after the
entropy decoding, so the split encoder writes the in-graph codec's files byte for byte
(tests/test_export_serving.py). The export fails if the networks' graph has an op that
stock TensorFlow does not register (tensorflow-compression's, tflic's range coder ops or
any other library's), or the codec's graph one beyond tflic's range coder ops (which an
export written with tensorflow-compression's coder has: re-export it).
"""

import json
import os
import posixpath
import shutil
import subprocess
import sys

from absl import app
from absl import flags
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tflic import cli
from tflic.codec import bitstream
from tflic.codec.deterministic import entropy_model as integer_model
from tflic.codec.deterministic import reference
from tflic.codec import tf_codec
from tflic import common_flags
from tflic.deploy import savedmodel
from tflic import errors
from tflic.model import tflic_model as model_lib

# Names the client (tflic.deploy.serving_client) reads too.
NETWORKS = "tflic_networks"
MANIFEST = "manifest.json"
CODEC = "tflic_codec"
CONFIG_FILE = "models.config"
README = "README.md"
# The release the recipe in export/serving_with_ops/ builds; the servables need its ops.
TF_SERVING_VERSION = "2.14.1"
# The ops of tflic/codec/rangecoder/_tf_ops.cc, the only ones of tflic_codec's graph that stock
# TensorFlow lacks: what export/serving_with_ops/ links into the model server. (Codecs
# exported since the C entropy core use the TflicCore ones; earlier exports the others.)
RANGE_CODER_OPS = ("TflicRangeEncode", "TflicRangeDecoderStart", "TflicRangeDecode",
                   "TflicRangeDecoderFinish", "TflicCoreEncode", "TflicCoreDecode")

_OUT = common_flags.OUT  # the model base path BASE
_OVERWRITE = common_flags.OVERWRITE
_SERVING_ROOT = flags.DEFINE_string(
    "serving_root", "/models", "Absolute path (or URI) at which the server sees BASE: the "
    "base paths in models.config are SERVING_ROOT/tflic_networks and SERVING_ROOT/tflic_codec.")
_SERVABLE_VERSION = flags.DEFINE_integer(
    "servable_version", 1, "Version directory of both servables (TF Serving serves the "
    "highest version under a base path).", lower_bound=1)
common_flags.declare_key_flags(__name__, "model", "out", "overwrite")


class NetworksModule(tf.Module):
  """The float networks of a model as tf.functions of stock TensorFlow ops.

  Args:
    model: the TflicModel (restored weights).
    manifest: the manifest dict (`manifest`), stored as the variable `manifest_json`.
  """

  def __init__(self, model, manifest):
    super().__init__(name=NETWORKS)
    # As in CodecModule: Keras would trace its training call into the SavedModel. Only
    # the weights these networks use are tracked, so only they are saved.
    self.__dict__["model"] = model
    self.network_variables = (list(model.analysis.variables) +
                              list(model.hyper_analysis.variables) +
                              list(model.synthesis.variables) + [model.log_gains])
    self.manifest_json = tf.Variable(json.dumps(manifest, sort_keys=True), trainable=False,
                                     name="manifest_json")
    self._fingerprint_hex = manifest["fingerprint"]

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image"),
                                tf.TensorSpec([], tf.float32, name="quality")])
  def analysis(self, image, quality):
    """uint8 image [H, W, 3] and quality in [0, 1] -> y (gained latent, float32
    [1, h, w, M]), z (clipped hyper latent, float32 [1, hz, wz, C]), quality_code (int32,
    the file's quality field) and fingerprint (hex string of the model's)."""
    _, y, quality_code, _ = tf_codec.analyse(self.model, image, quality)
    y = tf.debugging.assert_all_finite(y, "the model produced non-finite latents")
    z = self._hyper_latent(y)
    return {"y": y, "z": z, "quality_code": quality_code,
            "fingerprint": tf.constant(self._fingerprint_hex)}

  @tf.function(input_signature=[tf.TensorSpec([1, None, None, None], tf.float32, name="y")])
  def hyper_analysis(self, y):
    """y (float32 [1, h, w, M], e.g. a refined latent) -> z (float32 [1, hz, wz, C])."""
    return {"z": self._hyper_latent(y)}

  def _hyper_latent(self, y):
    z = tf.clip_by_value(self.model.hyper_latent(y), -tf_codec.SYMBOL_LIMIT, tf_codec.SYMBOL_LIMIT)
    return tf.debugging.assert_all_finite(z, "the model produced non-finite hyper-latents")

  @tf.function(input_signature=[tf.TensorSpec([1, None, None, None], tf.int32, name="y_hat"),
                                tf.TensorSpec([], tf.int32, name="quality_code"),
                                tf.TensorSpec([], tf.int32, name="height"),
                                tf.TensorSpec([], tf.int32, name="width")])
  def synthesis(self, y_hat, quality_code, height, width):
    """The decoded integer latent (y_hat: int32 [1, h, w, M], in units of 2^-10)
    and the file's quality code, height and width -> the image (uint8 [H, W, 3]) that
    `decompress` returns."""
    stride = model_lib.LATENT_STRIDE
    checks = [
        tf.debugging.assert_equal(tf.shape(y_hat)[1:3], tf.stack([
            (height + stride - 1) // stride, (width + stride - 1) // stride]),
                                  message="y_hat does not fit height and width"),
        tf.debugging.assert_equal(tf.shape(y_hat)[3], self.model.config.latent_channels,
                                  message="y_hat has the wrong number of channels"),
        tf.debugging.assert_positive(tf.minimum(height, width), message="empty image size"),
        tf.debugging.assert_less_equal(quality_code, bitstream.QUALITY_STEPS,
                                       message="quality_code exceeds 65535"),
        tf.debugging.assert_non_negative(quality_code, message="negative quality_code"),
    ]
    with tf.control_dependencies(checks):
      quality = tf.cast(quality_code, tf.float32) / bitstream.QUALITY_STEPS
    # float64 as in the codec, where y_hat is an exact float64 integer: int32 -> float64
    # is exact, so the division and the rounding to float32 are the decoder's.
    y_hat = tf.cast(y_hat, tf.float64)
    x_hat = self.model.synthesize(tf.cast(y_hat / float(integer_model.ONE), tf.float32),
                                  self.model.log_gain(quality))[0, :height, :width]
    image = tf.cast(tf.round(tf.clip_by_value(x_hat * 255.0, 0.0, 255.0)), tf.uint8)
    return {"image": image}

  def signatures(self):
    """The serving signatures, by name."""
    return {"analysis": self.analysis.get_concrete_function(),
            "hyper_analysis": self.hyper_analysis.get_concrete_function(),
            "synthesis": self.synthesis.get_concrete_function()}


def manifest(restored):
  """What a client needs besides the networks: bitstream format version, decoding order,
  fingerprint (hex) and config of a `savedmodel.Restored` model."""
  return {"format_version": bitstream.VERSION,
          "mode": restored.model.context.mode,
          "fingerprint": restored.fingerprint.hex(),
          "config": json.loads(restored.config.to_json()),
          "entropy_model": reference.FILENAME}


def unregistered_op_types(op_types):
  """The op types among `op_types` that stock TensorFlow does not register: those of op
  libraries (tflic's range coder ops, tensorflow-compression's, any other's), which a
  stock tensorflow_model_server lacks.

  This process cannot ask its op registry: it has loaded op libraries (tflic's and,
  through tflic.model.tflic_model, tensorflow-compression's), and the registry does not tell which
  library registered an op. So: an op of `tf.raw_ops` is stock (that module is generated
  with TensorFlow, and op libraries loaded later do not add to it), RANGE_CODER_OPS are
  not, and any other op is looked up in a fresh Python process that imports TensorFlow
  alone (a few seconds; the networks and the codec need none). No list of other
  libraries' ops needs keeping.
  """
  op_types, ours = set(op_types), set(RANGE_CODER_OPS)
  unknown = {op for op in op_types - ours if not hasattr(tf.raw_ops, op)}
  return (op_types & ours) | (_unregistered_in_stock(unknown) if unknown else set())


_UNREGISTERED_SCRIPT = """
import json, sys
import tensorflow  # stock TensorFlow's ops, and no op library's
from tensorflow.python.framework import op_def_registry
print(json.dumps(sorted(op for op in json.load(sys.stdin) if op_def_registry.get(op) is None)))
"""


def _unregistered_in_stock(op_types):
  """The op types among `op_types` that a process importing TensorFlow alone lacks."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  try:
    result = subprocess.run([sys.executable, "-c", _UNREGISTERED_SCRIPT],
                            input=json.dumps(sorted(op_types)), capture_output=True,
                            text=True, env=env, timeout=600, check=False)
  except (OSError, subprocess.SubprocessError) as e:
    raise errors.TflicError(f"cannot check the servables' ops: {e}") from None
  if result.returncode != 0:
    reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
    raise errors.TflicError(f"cannot check the servables' ops (a process importing "
                            f"TensorFlow failed: {reason})")
  return set(json.loads(result.stdout.strip().splitlines()[-1]))


def saved_model_op_types(path):
  """Every op type in a SavedModel's graphs, including its function library's bodies
  (calls to library functions by name are not op types and are left out)."""
  saved = saved_model_pb2.SavedModel()
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    saved.ParseFromString(f.read())
  types = set()
  for meta_graph in saved.meta_graphs:
    graph = meta_graph.graph_def
    functions = {function.signature.name for function in graph.library.function}
    found = {node.op for node in graph.node}
    for function in graph.library.function:
      found.update(node.op for node in function.node_def)
    types |= found - functions
  return types


def models_config(serving_root):
  """TF Serving's ModelServerConfig (text proto) serving both models under serving_root."""
  entries = "".join(
      f"  config {{\n    name: \"{name}\"\n"
      f"    base_path: \"{posixpath.join(serving_root, name)}\"\n"
      f"    model_platform: \"tensorflow\"\n  }}\n" for name in (NETWORKS, CODEC))
  return ("# TF Serving model config (--model_config_file), written by python -m export.serving.\n"
          f"# Base paths are where the server sees this directory ({serving_root}).\n"
          f"# {CODEC} loads only in a model server with tflic's range coder ops linked in\n"
          "# (export/serving_with_ops/ in the tflic repository); a stock server serves\n"
          f"# {NETWORKS} alone (--model_name={NETWORKS}, without this file).\n"
          f"model_config_list {{\n{entries}}}\n")


def _check_op_types(networks_dir, codec_dir):
  """TflicError unless the networks' graph has stock TensorFlow ops only, and the codec's
  no others than tflic's range coder ops (what export/serving_with_ops/ links in)."""
  networks, codec_ops = saved_model_op_types(networks_dir), saved_model_op_types(codec_dir)
  unregistered = unregistered_op_types(networks | codec_ops)
  if networks & unregistered:
    raise errors.TflicError(
        f"the {NETWORKS} graph has ops that stock TensorFlow lacks "
        f"({', '.join(sorted(networks & unregistered))}); a stock server cannot load it")
  foreign = (codec_ops & unregistered) - set(RANGE_CODER_OPS)
  if foreign:
    raise errors.TflicError(
        f"the {CODEC} graph has ops beyond tflic's range coder ops "
        f"({', '.join(sorted(foreign))}; an export written with tensorflow-compression's "
        "coder?): re-export it with `python -m tflic.export --checkpoint=EXPORT --out=NEW`")


def _check_serving_root(root):
  if not (root.startswith("/") or "://" in root):
    raise errors.TflicError(f"--serving_root must be an absolute path or a URI, got {root!r}")
  return root.rstrip("/") or "/"


def export_base(model_path, out, serving_root="/models", version=1, overwrite=False):
  """Writes the model base path `out` (see the module docstring), atomically.

  Returns (out, manifest dict).
  """
  serving_root = _check_serving_root(serving_root)
  out = os.path.abspath(out)
  savedmodel.check_destination(out, overwrite)
  if not os.path.isdir(model_path):
    raise errors.TflicError(f"model not found: {model_path}")
  with savedmodel.staged_directory(out, overwrite) as staging:
    codec_dir = os.path.join(staging, CODEC, str(version))
    os.makedirs(os.path.dirname(codec_dir))
    if tf_codec.is_saved_model(model_path):
      shutil.copytree(model_path, codec_dir)
    else:
      savedmodel.export_checkpoint(model_path, codec_dir)
    # The networks come from the codec servable itself, so both serve the same weights.
    restored = savedmodel.restore_model(codec_dir)
    info = manifest(restored)
    networks_dir = os.path.join(staging, NETWORKS, str(version))
    module = NetworksModule(restored.model, info)
    tf.saved_model.save(module, networks_dir, signatures=module.signatures())
    _check_op_types(networks_dir, codec_dir)
    assets = os.path.join(networks_dir, "assets")
    os.makedirs(assets, exist_ok=True)
    shutil.copyfile(os.path.join(codec_dir, "assets", reference.FILENAME),
                    os.path.join(assets, reference.FILENAME))
    with open(os.path.join(assets, MANIFEST), "w") as f:
      json.dump(info, f, indent=2, sort_keys=True)
    with open(os.path.join(staging, CONFIG_FILE), "w") as f:
      f.write(models_config(serving_root))
    with open(os.path.join(staging, README), "w") as f:
      f.write(readme(info, serving_root, version))
  return out, info


def readme(info, serving_root, version):
  """The README.md of a model base path."""
  cfg = info["config"]["model"]
  m, c = cfg["latent_channels"], cfg["hyper_channels"]
  stride, hyper = model_lib.LATENT_STRIDE, model_lib.HYPER_STRIDE
  tag = TF_SERVING_VERSION
  return f"""# tflic on TensorFlow Serving

Model `{info["fingerprint"]}` ({info["mode"]} decoding order, .tflic format version
{info["format_version"]}), written by `python -m export.serving` of the tflic repository.

| path | what |
|---|---|
| `{NETWORKS}/{version}/` | SavedModel of stock TensorFlow ops: the float networks. A stock `tensorflow_model_server` serves it; the client entropy-codes |
| `{NETWORKS}/{version}/assets/` | what the client codes with (a remote client needs a copy): `{MANIFEST}` (fingerprint, decoding order, format version, config) and `{reference.FILENAME}` (the integer entropy model and coding tables) |
| `{CODEC}/{version}/` | the full codec with tflic's range coder ops in the graph (`compress`, `compress_refined`, `decompress`); loads only where those ops are registered: a model server with them linked in, or TensorFlow after `tf.load_op_library` |
| `{CONFIG_FILE}` | `--model_config_file` for both, base paths under `{serving_root}` |

## Signatures of `{NETWORKS}`

Shapes: `h = ceil(H / {stride})`, `w = ceil(W / {stride})`, `hz = ceil(h / {hyper})`,
`wz = ceil(w / {hyper})`, M = {m} latent channels, C = {c} hyper-latent channels.

| signature | inputs | outputs |
|---|---|---|
| `analysis` | `image` uint8 [H, W, 3], `quality` float32 [] in [0, 1] | `y` float32 [1, h, w, M] (the gained latent), `z` float32 [1, hz, wz, C] (the clipped hyper latent), `quality_code` int32 [] (`round(quality * 65535)`, the file's quality field), `fingerprint` string [] (hex) |
| `hyper_analysis` | `y` float32 [1, h, w, M] | `z` float32 [1, hz, wz, C] |
| `synthesis` | `y_hat` int32 [1, h, w, M] (the decoded integer latent, in units of 2^-10), `quality_code` int32 [], `height` int32 [], `width` int32 [] | `image` uint8 [H, W, 3] |

`analysis` computes exactly what the in-graph codec's `compress` computes before entropy
coding, and `synthesis` exactly what its `decompress` computes after entropy decoding, on
the same TensorFlow build and kind of CPU (the server's own build may round the float
networks differently in the last bits: its files are then still valid files, not
byte-identical ones). The
signatures are not batched: send one image per request, in the columnar (`inputs`) REST
format.

## Serving the networks with the stock server

From this directory:

```sh
docker run --rm -p 8500:8500 -p 8501:8501 \\
  --mount type=bind,source="$PWD",target={serving_root},readonly \\
  -e MODEL_BASE_PATH={serving_root} -e MODEL_NAME={NETWORKS} tensorflow/serving:{tag}
```

(`{CONFIG_FILE}` also lists `{CODEC}`, which a stock server cannot load: start the stock
server on `{NETWORKS}` alone, as above.)

REST (port 8501):

```sh
curl -s http://localhost:8501/v1/models/{NETWORKS}/metadata
curl -s -X POST http://localhost:8501/v1/models/{NETWORKS}:predict -d '{{
  "signature_name": "analysis",
  "inputs": {{"image": [[[255, 128, 0], [0, 64, 255]]], "quality": 0.5}}}}'
# -> {{"outputs": {{"y": [[[[...]]]], "z": [[[[...]]]], "quality_code": 32768,
#                  "fingerprint": "{info["fingerprint"]}"}}}}
```

A .tflic file from Python, identical to the in-graph codec's (tflic installed; no
TensorFlow needed for the REST client):

```python
from tflic.deploy.serving_client import SplitEncoder
encoder = SplitEncoder("http://localhost:8501/v1/models/{NETWORKS}",
                       assets="{NETWORKS}/{version}/assets")
data = encoder.compress(image, 0.5)  # image: uint8 numpy [H, W, 3]
```

`SplitEncoder("{NETWORKS}/{version}")` runs the same servable in-process instead (TF1
session loader, stock ops: no op library needed).

gRPC (port 8500), with the `tensorflow-serving-api` package of the server's version (not
run by tflic's tests, whose environment lacks that package):

```python
import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

channel = grpc.insecure_channel("localhost:8500",
                                options=[("grpc.max_receive_message_length", -1)])
stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
request = predict_pb2.PredictRequest()
request.model_spec.name = "{NETWORKS}"
request.model_spec.signature_name = "analysis"
request.inputs["image"].CopyFrom(tf.make_tensor_proto(image, dtype=tf.uint8))
request.inputs["quality"].CopyFrom(tf.make_tensor_proto(0.5, dtype=tf.float32))
response = stub.Predict(request, timeout=60.0)
y = tf.make_ndarray(response.outputs["y"])  # float32 [1, h, w, M]
```

(The latent of a large image exceeds gRPC's default 4 MB message limit, hence the option.)

## Serving the full codec

`{CODEC}` codes files in the graph with tflic's range coder ops
(`tflic/codec/rangecoder/_tf_ops.cc` in the tflic repository):
`{'`, `'.join(RANGE_CODER_OPS)}`.
`tensorflow_model_server` does not ship them. Build a model server with them linked in
from `export/serving_with_ops/` in the tflic repository (a Bazel build of TF Serving
{tag}, some hours), then serve both models:

```sh
docker run --rm -p 8500:8500 -p 8501:8501 \\
  --mount type=bind,source="$PWD",target={serving_root},readonly \\
  tflic-serving --model_config_file={serving_root}/{CONFIG_FILE}
```

`decompress` over REST takes the file base64-encoded:
`{{"signature_name": "decompress", "inputs": {{"bitstream": {{"b64": "..."}}}}}}`.
`compress` returns the file as a binary string in an output named `bitstream`, which the
REST API does not base64-encode (it does so only for outputs named `*_bytes`): call
`compress` over gRPC.

In Python, `{CODEC}/{version}` loads in plain TensorFlow (no tensorflow-compression, no
tflic code) once the ops are registered. Load the op library that tflic's
`pip install -e .` builds for the installed TensorFlow, whose path this prints:

```sh
python -c "from tflic.codec.rangecoder import tf_ops; print(tf_ops.LIBRARY)"
```

(Where tflic is installed, `import tflic.codec.rangecoder.tf_ops` loads it too.)

```python
import tensorflow as tf
tf.load_op_library("/path/to/tflic/codec/rangecoder/_tf_ops.so")  # before loading
codec = tf.saved_model.load("{CODEC}/{version}")
data = codec.compress(image, 0.5)  # the .tflic file (scalar string)
image = codec.decompress(data)
```
"""


def main(argv):
  """The absl main of `python -m export.serving`."""
  model_path, out = common_flags.export_model_and_out(argv)
  out, info = export_base(model_path, out, _SERVING_ROOT.value,
                          _SERVABLE_VERSION.value, _OVERWRITE.value)
  print(f"exported {model_path} (fingerprint {info['fingerprint']}) to {out}")


if __name__ == "__main__":
  app.run(cli.guarded(main, "export.serving"))
