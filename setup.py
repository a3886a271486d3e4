"""Installs tflic, a learned image codec for TensorFlow 2.14 / tensorflow-compression 2.14."""

import json
import os
import subprocess
import sys

import setuptools
from setuptools.command import build_ext

# The C range coder as TensorFlow ops (tflic/codec/rangecoder/tf_ops.py): a plain shared
# library for tf.load_op_library, not a Python module.
TF_OPS = "tflic.codec.rangecoder._tf_ops"
# The layers' fused training kernels (tflic/model/layers/fused_ops.py), also a library of ops.
FUSED_OPS = "tflic.model.layers._fused_ops"
_OP_LIBRARIES = (TF_OPS, FUSED_OPS)


def _tensorflow_flags():
  """(compile flags, link flags) of the installed TensorFlow, or None without one.

  Asked in a subprocess: setup.py must import without TensorFlow (egg_info runs
  before the dependencies are installed, and the TF-free decoder never has it),
  and the build process need not carry TensorFlow's threads and memory.
  """
  code = ("import json, tensorflow as tf; "
          "print(json.dumps([tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags()]))")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  try:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=600, check=False)
  except (OSError, subprocess.SubprocessError):
    return None
  if result.returncode != 0:
    return None
  return json.loads(result.stdout.strip().splitlines()[-1])


def _up_to_date(output, sources):
  """Whether `output` exists and is newer than all `sources`."""
  if not os.path.exists(output):
    return False
  return all(os.path.getmtime(source) <= os.path.getmtime(output) for source in sources)


class BuildExt(build_ext.build_ext):
  """build_ext that also builds the TensorFlow op libraries, if TensorFlow is installed."""

  def build_extensions(self):
    wanted = any(e.name in _OP_LIBRARIES for e in self.extensions)
    tf_flags = _tensorflow_flags() if wanted else None
    if wanted and tf_flags is None:
      self.warn("TensorFlow is not importable: skipping the range coder's TensorFlow ops "
                "(tflic/codec/rangecoder/tf_ops.py) and the layers' fused kernels")
      self.extensions = [e for e in self.extensions if e.name not in _OP_LIBRARIES]
    self._tf_flags = tf_flags
    super().build_extensions()

  def get_ext_filename(self, fullname):
    # tf.load_op_library takes any file name; a fixed one is simpler to find.
    # (distutils passes the last component of the name, setuptools the full name.)
    filename = super().get_ext_filename(fullname)
    for library in _OP_LIBRARIES:
      name = library.rsplit(".", 1)[1]
      if fullname in (library, name):
        return os.path.join(os.path.dirname(filename), name + ".so")
    return filename

  def build_extension(self, ext):
    if ext.name not in _OP_LIBRARIES:
      super().build_extension(ext)
      return
    output = self.get_ext_fullpath(ext.name)
    compile_flags, link_flags = self._tf_flags
    # Rebuilt for a new TensorFlow too: the library must match its ABI.
    tf_libraries = [os.path.join(d[2:], l[3:]) for d in link_flags if d.startswith("-L")
                    for l in link_flags if l.startswith("-l:")]
    dependencies = ext.sources + ext.depends + [p for p in tf_libraries if os.path.exists(p)]
    if not self.force and _up_to_date(output, dependencies):
      return
    # range_coder.c stays C99 (it is the portable file apps compile); only the op
    # wrapper is C++17 with TensorFlow's flags (its ABI, Eigen alignment, includes).
    objects = []
    for source in ext.sources:
      c_flags = ["-std=c99", "-O3", "-fno-trapping-math"]
      # The fused kernels' loops vectorise with -O3; -fno-trapping-math lets GCC turn
      # their selects (in exp, erf, rounding) into vector blends (no value changes).
      cc_flags = ["-O3", "-fno-trapping-math"] if ext.name == FUSED_OPS else ["-O2"]
      flags = c_flags if source.endswith(".c") else compile_flags + cc_flags
      objects += self.compiler.compile(
          [source], output_dir=os.path.join(self.build_temp, ext.name.rsplit(".", 1)[1]),
          depends=ext.depends,
          extra_postargs=flags + ["-g0", "-Wall"], debug=self.debug)
    self.mkpath(os.path.dirname(output))
    self.compiler.link_shared_object(objects, output, extra_postargs=link_flags,
                                     target_lang="c++", debug=self.debug)


setuptools.setup(
    name="tflic",
    version="0.1.0",
    description="Learned image compression with Swin transforms and a transformer context model.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    # configs/ lives at the top of the repository and is installed as tflic.configs so that
    # `--config=small` works after a non-editable install too.
    packages=setuptools.find_packages(include=["tflic", "tflic.*"]) + ["tflic.configs"],
    package_dir={"tflic.configs": "configs"},
    package_data={"tflic.configs": ["*.json"], "tflic": ["bundled/**/*", "evaluation/*.json"],
                  # The portable C range coder and entropy core ship as source for apps.
                  "tflic.codec.rangecoder": ["*.h", "*.c"]},
    include_package_data=True,
    install_requires=[
        "tensorflow==2.14.1",
        "tensorflow-compression==2.14.1",
        "absl-py",
        "tensorflow-datasets",
        # tensorflow-metadata>=1.16 needs protobuf 5, which breaks TF 2.14.
        "tensorflow-metadata<1.16",
        "Pillow>=10",
        "matplotlib",
        "ai-edge-litert",
        "bjontegaard",
        "pytest",
        "pytest-xdist",
        "tqdm",
    ],
    # keras-cv is optional: measured against tf.image on the training input path it is
    # 15x slower for crop + flip, and resamples instead of cropping (docs/datasets.md;
    # reports/augmentation). Only benchmarks/augmentation.py uses it.
    extras_require={"keras-cv": ["keras-cv"]},
    ext_modules=[
        setuptools.Extension(
            "tflic.codec.rangecoder._binding",
            ["tflic/codec/rangecoder/_binding.c", "tflic/codec/rangecoder/range_coder.c"],
            depends=["tflic/codec/rangecoder/range_coder.h"],
            extra_compile_args=["-std=c99", "-O2", "-Wall", "-Wextra"],
        ),
        # The integer entropy model and coding loop (entropy_core.c) for Python callers.
        # -O3 vectorises its exact float64 sums (order-free: every partial sum is an
        # integer below 2^53); no -ffast-math, which could change other values;
        # -fno-trapping-math lets GCC vectorise the clamps (no value changes).
        setuptools.Extension(
            "tflic.codec.rangecoder._core",
            ["tflic/codec/rangecoder/_core_binding.c", "tflic/codec/rangecoder/entropy_core.c",
             "tflic/codec/rangecoder/range_coder.c"],
            depends=["tflic/codec/rangecoder/entropy_core.h", "tflic/codec/rangecoder/range_coder.h"],
            extra_compile_args=["-std=c99", "-O3", "-fno-trapping-math", "-Wall", "-Wextra"],
            libraries=["m"],
        ),
        # Compiled by BuildExt with TensorFlow's flags, or skipped without TensorFlow.
        setuptools.Extension(
            TF_OPS,
            ["tflic/codec/rangecoder/_tf_ops.cc", "tflic/codec/rangecoder/entropy_core.c",
             "tflic/codec/rangecoder/range_coder.c"],
            depends=["tflic/codec/rangecoder/entropy_core.h", "tflic/codec/rangecoder/range_coder.h"],
        ),
        # Compiled by BuildExt too: the fused kernels of training on CPUs (fused_ops.py).
        setuptools.Extension(FUSED_OPS, ["tflic/model/layers/_fused_ops.cc"]),
    ],
    cmdclass={"build_ext": BuildExt},
    entry_points={"console_scripts": ["tflic=tflic.cli:main",
                                      "tflic-lite=tflic.lite.cli:main"]},
)
