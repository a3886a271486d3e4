"""The codec: files in, files out.

`tflic.codec.load(path)` returns a `Codec` (`tf_codec`: the codec in TensorFlow, range
coding in the graph). Its parts: `bitstream` (the file header), `deterministic` (the
integer entropy model), `rangecoder` (the C range coder and entropy core), `image_io`
(safe image reading, atomic writes), `tiling` (where the transforms' tiles go),
`rate_control`, `refinement` and `progress`.
"""

# The TensorFlow codec is imported on first use only: bitstream, image_io, tiling and
# progress also serve the LiteRT fast path (tflic.lite), which must not import TensorFlow.
_TF_CODEC_API = ("load", "Codec", "CodecModule", "default_model_path", "is_saved_model",
                 "module_from_workdir")


def __getattr__(name):
  if name in _TF_CODEC_API:
    from tflic.codec import tf_codec  # pylint: disable=import-outside-toplevel
    return getattr(tf_codec, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
