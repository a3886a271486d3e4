"""`python -m export.serving`: a TF Serving base path whose stock servable, run without
tensorflow-compression, encodes and decodes exactly as the in-graph codec, and whose codec
servable loads in TensorFlow with tflic's op library alone."""

import http.server
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import threading

from absl import flags
from absl.testing import flagsaver
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import text_format
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

from export import serving
from tflic import cli
from tflic.codec import bitstream
from tflic.codec.rangecoder import tf_ops
from tflic.deploy import serving_client
from tflic import errors

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
SIZES = [(1, 1), (17, 30), (64, 48)]
QUALITIES = [0.0, 0.37, 1.0]


@pytest.fixture(scope="module")
def base(tiny_model_dir, tmp_path_factory):
  """(path, manifest) of the tiny model's serving base path."""
  out, info = serving.export_base(str(tiny_model_dir),
                                  str(tmp_path_factory.mktemp("serving") / "base"))
  return pathlib.Path(out), info


@pytest.fixture(scope="module")
def crops(kodak_dir):
  """Top-left crops of a Kodak image, one per SIZES."""
  image = np.asarray(Image.open(kodak_dir / "kodim01.png").convert("RGB"))
  return [np.ascontiguousarray(image[:h, :w]) for h, w in SIZES]


@pytest.fixture(scope="module")
def reference(base, crops, tiny_model_dir, tiny_codec):
  """The in-graph codec's files of the crops at QUALITIES, and for the largest crop's
  file at quality 0.37: its decoded integer latent and image."""
  # The codec servable is a copy of the tiny SavedModel, already loaded as tiny_codec.
  codec_dir = base[0] / serving.CODEC / "1"
  for name in ("saved_model.pb", "variables/variables.index"):
    assert (codec_dir / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
  the_codec = tiny_codec
  files = {(i, q): the_codec.compress(crop, q) for i, crop in enumerate(crops)
           for q in QUALITIES}
  data = files[(len(crops) - 1, 0.37)]
  y_hat = the_codec.module.decode_latent(tf.constant(data))["y_hat"].numpy()
  assert np.array_equal(y_hat, np.round(y_hat)) and np.abs(y_hat).max() < 2**31
  return dict(codec=the_codec, files=files, y_hat=y_hat.astype(np.int32),
              quality_code=bitstream.unpack(data)[0].quality_code,
              image=the_codec.decompress(data))


def _model_server_config_class():
  """tensorflow.serving.ModelServerConfig with the fields models.config uses, numbered as
  in tensorflow_serving/config/model_server_config.proto (TF Serving's Python package is
  not installed here)."""
  proto = descriptor_pb2.FileDescriptorProto(name="model_server_config_subset.proto",
                                             package="tensorflow.serving", syntax="proto3")
  field = descriptor_pb2.FieldDescriptorProto
  config = proto.message_type.add(name="ModelConfig")
  for name, number in (("name", 1), ("base_path", 2), ("model_platform", 4)):
    config.field.add(name=name, number=number, type=field.TYPE_STRING,
                     label=field.LABEL_OPTIONAL)
  proto.message_type.add(name="ModelConfigList").field.add(
      name="config", number=1, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
      type_name=".tensorflow.serving.ModelConfig")
  proto.message_type.add(name="ModelServerConfig").field.add(
      name="model_config_list", number=1, type=field.TYPE_MESSAGE,
      label=field.LABEL_OPTIONAL, type_name=".tensorflow.serving.ModelConfigList")
  pool = descriptor_pool.DescriptorPool()
  pool.Add(proto)
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName("tensorflow.serving.ModelServerConfig"))


def _signature_defs(servable):
  saved = saved_model_pb2.SavedModel()
  saved.ParseFromString((servable / "saved_model.pb").read_bytes())
  return saved.meta_graphs[0].signature_def


def test_base_path_layout_config_and_signatures(base, reference, tiny_model_dir):
  path, info = base
  networks, codec_dir = path / serving.NETWORKS / "1", path / serving.CODEC / "1"
  assert sorted(p.name for p in path.iterdir()) == sorted(
      [serving.NETWORKS, serving.CODEC, serving.CONFIG_FILE, serving.README])
  assert not [p for p in path.parent.iterdir() if p.name.startswith(".serving-")]
  for servable in (networks, codec_dir):
    assert (servable / "saved_model.pb").is_file() and (servable / "variables").is_dir()
  npz = "assets/integer_entropy_model.npz"
  assert (networks / npz).read_bytes() == (tiny_model_dir / npz).read_bytes()
  assert (serving.NETWORKS, serving.MANIFEST) == (serving_client.NETWORKS,
                                                  serving_client.MANIFEST)
  manifest = json.loads((networks / "assets" / serving.MANIFEST).read_text())
  assert manifest == info
  assert manifest["fingerprint"] == reference["codec"].fingerprint.hex()
  assert (manifest["format_version"], manifest["mode"]) == (2, "wavefront")
  assert manifest["config"]["model"]["latent_channels"] == 32

  config = text_format.Parse((path / serving.CONFIG_FILE).read_text(),
                             _model_server_config_class()())
  assert [(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config] == [
      ("tflic_networks", "/models/tflic_networks", "tensorflow"),
      ("tflic_codec", "/models/tflic_codec", "tensorflow")]

  signatures = _signature_defs(networks)
  assert set(serving_client.SIGNATURES) <= set(signatures)
  for name, (inputs, outputs) in serving_client.SIGNATURES.items():
    for declared, tensors in ((inputs, signatures[name].inputs),
                              (outputs, signatures[name].outputs)):
      assert {k: tf.dtypes.as_dtype(v.dtype) for k, v in tensors.items()} == {
          k: tf.string if t is str else tf.as_dtype(t) for k, t in declared.items()}
  assert set(_signature_defs(codec_dir)) >= {"compress", "decompress"}

  # The networks have neither tensorflow-compression's ops nor tflic's, nor any other that
  # stock TensorFlow lacks; the codec has tflic's two entropy core ops (the scan sees
  # them) and no other op beyond stock TensorFlow's.
  networks_ops, codec_ops = map(serving.saved_model_op_types, (networks, codec_dir))
  assert not networks_ops & (_tfc_op_types() | set(serving.RANGE_CODER_OPS))
  assert not serving.unregistered_op_types(networks_ops)
  assert {op for op in codec_ops if not hasattr(tf.raw_ops, op)} == {"TflicCoreEncode",
                                                                      "TflicCoreDecode"}
  assert {"TflicCoreEncode", "TflicCoreDecode"} <= set(serving.RANGE_CODER_OPS)
  assert not codec_ops & _tfc_op_types()
  # Ops of other libraries are looked up in a process importing TensorFlow alone.
  assert serving.unregistered_op_types(
      {"MatMul", "CreateRangeEncoder", "TflicRangeDecode", "NoSuchOp"}) == {
          "CreateRangeEncoder", "TflicRangeDecode", "NoSuchOp"}
  readme = (path / serving.README).read_text()
  assert info["fingerprint"] in readme and '"signature_name": "analysis"' in readme


def _tfc_op_types():
  """The op types tensorflow-compression registers (its generated wrappers define each op
  under its own name, beside the snake_case function)."""
  from tensorflow_compression.python.ops import gen_ops  # pylint: disable=g-import-not-at-top
  names = {name for name in dir(gen_ops.ops) if op_def_registry.get(name) is not None}
  assert "CreateRangeEncoder" in names
  return names


_STOCK_PROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np
    try:
      import tensorflow_compression  # the fake package on PYTHONPATH raises
      sys.exit("tensorflow_compression is importable")
    except ImportError:
      pass
    import tensorflow as tf
    from tensorflow.python.framework import op_def_registry
    from tflic.deploy import serving_client
    base, inputs_npz, op_types, library, out_npz = sys.argv[1:]
    unregistered = [op for op in json.loads(op_types) if op_def_registry.get(op) is None]
    inputs = np.load(inputs_npz)
    encoder = serving_client.SplitEncoder(base)
    files = {f"{i}_{q}": np.frombuffer(encoder.compress(inputs[f"crop{i}"], float(q)),
                                       np.uint8)
             for i in range(int(inputs["count"])) for q in inputs["qualities"]}
    image = encoder.servable.run("synthesis", {
        "y_hat": inputs["y_hat"], "quality_code": inputs["quality_code"],
        "height": inputs["height"], "width": inputs["width"]})["image"]
    # The codec: not without tflic's op library, then with TensorFlow and the library alone.
    try:
      tf.saved_model.load(f"{base}/tflic_codec/1")
      sys.exit("the codec loaded without tflic's op library")
    except RuntimeError as e:
      assert "Op type not registered 'TflicCore" in str(e), e
    tf.load_op_library(library)
    the_codec = tf.saved_model.load(f"{base}/tflic_codec/1")
    last = int(inputs["count"]) - 1
    codec_file = the_codec.compress(inputs[f"crop{last}"], 0.37).numpy()
    decompress = the_codec.signatures["decompress"]  # as TF Serving runs it
    codec_image = decompress(bitstream=tf.constant(codec_file))["image"].numpy()
    assert not [m for m in sys.modules if m.startswith(("tensorflow_compression",
                                                        "tflic.codec.rangecoder.tf_ops"))]
    np.savez(out_npz, image=image, unregistered=np.array(unregistered, str),
             codec_file=np.frombuffer(codec_file, np.uint8), codec_image=codec_image, **files)
""")


def test_stock_servable_without_tfc(base, crops, reference, tmp_path):
  """Where tensorflow_compression cannot be imported: the networks load with the TF1
  session loader, every op is a stock one, the split encoder writes the codec's files byte
  for byte and `synthesis` decodes to `decompress`'s image; the codec servable does not
  load until tflic's op library is loaded (tf.load_op_library), then writes and decodes
  the same files."""
  fake = tmp_path / "fake" / "tensorflow_compression"
  fake.mkdir(parents=True)
  (fake / "__init__.py").write_text("raise ImportError('tensorflow_compression is hidden')\n")
  (tmp_path / "stock.py").write_text(_STOCK_PROCESS)
  height, width = crops[-1].shape[:2]
  np.savez(tmp_path / "inputs.npz", count=len(crops), qualities=np.array(QUALITIES),
           y_hat=reference["y_hat"], quality_code=np.int32(reference["quality_code"]),
           height=np.int32(height), width=np.int32(width),
           **{f"crop{i}": crop for i, crop in enumerate(crops)})
  op_types = sorted(serving.saved_model_op_types(base[0] / serving.NETWORKS / "1"))
  result = subprocess.run(
      [sys.executable, str(tmp_path / "stock.py"), str(base[0]), str(tmp_path / "inputs.npz"),
       json.dumps(op_types), str(tf_ops.LIBRARY), str(tmp_path / "out.npz")], cwd=REPO,
      env=dict(ENV, PYTHONPATH=os.pathsep.join([str(tmp_path / "fake"), str(REPO)])),
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  out = np.load(tmp_path / "out.npz")
  assert out["unregistered"].size == 0, out["unregistered"]
  np.testing.assert_array_equal(out["image"], reference["image"])
  for (i, q), data in reference["files"].items():
    assert out[f"{i}_{q}"].tobytes() == data, (SIZES[i], q)
  assert out["codec_file"].tobytes() == reference["files"][(len(crops) - 1, 0.37)]
  np.testing.assert_array_equal(out["codec_image"], reference["image"])


def _tf_serving_number(value):
  """A float32 as TF Serving's REST API writes it (json_tensor.cc, WriteDecimal): six
  significant digits when they round-trip, else nine."""
  if not np.isfinite(value):
    return "NaN" if np.isnan(value) else ("-Infinity" if value < 0 else "Infinity")
  text = "%g" % value
  if np.float32(text) != value:
    text = "%.9g" % value
  return text if "." in text or "e" in text else text + ".0"


def _to_json(value):
  """A servable output as TF Serving's JSON text."""
  if isinstance(value, str):
    return json.dumps(value)
  value = np.asarray(value)
  if value.ndim:
    return "[" + ",".join(_to_json(v) for v in value) + "]"
  if value.dtype == np.float32:
    return _tf_serving_number(value)
  return json.dumps(value.item())


class _FakeTfServing(http.server.BaseHTTPRequestHandler):
  """TF Serving's REST predict API for one model, answered by a LocalServable: columnar
  requests, the reply format and error replies of json_tensor.cc."""

  servable = None
  path_prefix = f"/v1/models/{serving_client.NETWORKS}"

  def do_POST(self):  # pylint: disable=invalid-name
    request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    signature = request["signature_name"]
    if self.path != self.path_prefix + ":predict" or signature not in serving_client.SIGNATURES:
      return self._reply(404, json.dumps({"error": "no such servable or signature"}))
    input_types, output_types = serving_client.SIGNATURES[signature]
    inputs = {k: np.asarray(v, input_types[k]) for k, v in request["inputs"].items()}
    try:
      outputs = self.servable.run(signature, inputs)
    except errors.TflicError as e:
      return self._reply(400, json.dumps({"error": str(e)}))
    if len(outputs) == 1:
      body = _to_json(next(iter(outputs.values())))
    else:
      body = "{" + ",".join(f"{json.dumps(k)}:{_to_json(v)}" for k, v in outputs.items()) + "}"
    return self._reply(200, '{"outputs":' + body + "}")

  def _reply(self, status, text):
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(text)))
    self.end_headers()
    self.wfile.write(text.encode())

  def log_message(self, *args):  # pylint: disable=arguments-differ
    del args


def test_rest_split_encoder_on_loopback(base, crops, reference):
  """Through TF Serving's REST API (a fake on 127.0.0.1 answering from the servable), the
  split encoder writes the codec's files and `synthesis` returns `decompress`'s image."""
  networks = base[0] / serving.NETWORKS / "1"
  handler = type("Handler", (_FakeTfServing,),
                 {"servable": serving_client.LocalServable(str(networks))})
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    url = f"http://127.0.0.1:{server.server_port}{_FakeTfServing.path_prefix}"
    with pytest.raises(errors.TflicError, match="needs assets"):
      serving_client.SplitEncoder(url)
    encoder = serving_client.SplitEncoder(url, assets=str(networks / "assets"))
    for (i, q), data in reference["files"].items():
      assert encoder.compress(crops[i], q) == data, (SIZES[i], q)
    analysed = encoder.servable.run("analysis", {"image": crops[-1], "quality": 0.5})
    z = encoder.servable.run("hyper_analysis", {"y": analysed["y"]})["z"]
    np.testing.assert_array_equal(z, analysed["z"])
    height, width = crops[-1].shape[:2]
    image = encoder.servable.run("synthesis", {
        "y_hat": reference["y_hat"], "quality_code": reference["quality_code"],
        "height": height, "width": width})["image"]
    np.testing.assert_array_equal(image, reference["image"])
    with pytest.raises(errors.TflicError, match="refused synthesis: .*y_hat does not fit"):
      encoder.servable.run("synthesis", {
          "y_hat": reference["y_hat"], "quality_code": reference["quality_code"],
          "height": height + 16, "width": width})
  finally:
    server.shutdown()
    server.server_close()
  with pytest.raises(errors.TflicError, match="cannot reach"):
    serving_client.RestServable(url, timeout=5).run("hyper_analysis",
                                                    {"y": np.zeros([1, 1, 1, 32])})


def test_cli_errors_are_one_line(base, tiny_model_dir, capfd):
  """An existing output is kept without --overwrite; a relative --serving_root is refused."""
  for flag, message in ((f"--out={base[0]}",
                         f"{base[0]} exists; pass --overwrite to replace it"),
                        (f"--out={base[0]}_new --serving_root=models",
                         "--serving_root must be an absolute path or a URI, got 'models'")):
    argv = ["export.serving", f"--model={tiny_model_dir}", *flag.split()]
    with flagsaver.flagsaver(), pytest.raises(SystemExit) as exit_info:
      cli.guarded(serving.main, "export.serving")(flags.FLAGS(argv))
    assert exit_info.value.code == 2
    assert capfd.readouterr().err == f"tflic export.serving: error: {message}\n"
  assert (base[0] / serving.README).is_file()
  assert not pathlib.Path(f"{base[0]}_new").exists()


def test_split_encoder_tiles_as_the_codec_does(base, tiny_codec):
  from tflic.codec import tf_codec  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(5)
  image = rng.integers(0, 256, [150, 200, 3], dtype=np.uint8)
  encoder = serving_client.SplitEncoder(str(base[0]), tile_kept=4)
  tiled_codec = tf_codec.Codec(tiny_codec.module, tile_kept=4)
  assert len(tiled_codec.plan(150, 200)) == 12
  stages = []
  data = encoder.compress(image, 0.37, progress=lambda *a: stages.append(a))
  assert data == tiled_codec.compress(image, 0.37)
  assert data == serving_client.SplitEncoder(str(base[0])).compress(image, 0.37)
  chunks = encoder.core.chunks(10, 13)
  assert ("analysis", 12, 12) in stages and stages[-1] == ("coding", chunks, chunks)
