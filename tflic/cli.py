"""The `tflic` command: dispatches `tflic SUBCOMMAND [flags] [args]` to its module.

Each subcommand module declares its own absl flags, so only the chosen one is imported.
"""

import importlib
import os
import sys

# Subcommand -> (module, function). The function takes absl's argv (program name first).
SUBCOMMANDS = {
    "compress": ("tflic.codec_cli", "compress_main"),
    "decompress": ("tflic.codec_cli", "decompress_main"),
    "info": ("tflic.codec_cli", "info_main"),
    "eval": ("tflic.evaluation.main", "main"),
    "train": ("tflic.train", "main"),
    "export": ("tflic.export", "main"),
    "datasets": ("tflic.datasets.main", "main"),
}

USAGE = """usage: tflic SUBCOMMAND [--flags] [args]

subcommands:
  compress    IN.png [IN2.png ...] OUT.tflic|OUTDIR   encode images into .tflic files
  decompress  IN.tflic [...] OUT.png|OUTDIR           decode .tflic files into PNG
  info        IN.tflic [...]                          print a bitstream's header
  eval        --dataset=DIR --out=DIR                 rate-distortion evaluation
  train       --config=NAME --workdir=DIR             train a model
  export      --checkpoint=DIR --out=DIR              write a SavedModel codec
  datasets    prepare NAME --manual_dir=DIR | list    local tfds datasets (tfds:NAME)

`tflic SUBCOMMAND --help` lists a subcommand's flags."""


def _quiet_tensorflow():
  # TF's C++ start-up chatter would bury the one line a user needs to read.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None):
  """Entry point of the `tflic` console script."""
  argv = list(sys.argv if argv is None else argv)
  try:
    return _main(argv)
  except KeyboardInterrupt:  # e.g. during TensorFlow's import, before guarded() runs
    program = f"tflic {argv[1]}" if len(argv) > 1 and argv[1] in SUBCOMMANDS else "tflic"
    print(f"{program}: interrupted", file=sys.stderr)
    return 130


def _main(argv):
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(USAGE)
    return 0 if len(argv) >= 2 else 2
  command = argv[1]
  if command not in SUBCOMMANDS:
    print(f"tflic: error: unknown subcommand {command!r}; try `tflic --help`", file=sys.stderr)
    return 2
  _quiet_tensorflow()
  from absl import flags  # pylint: disable=g-import-not-at-top
  module_name, function_name = SUBCOMMANDS[command]
  module = importlib.import_module(module_name)
  function = getattr(module, function_name)
  absl_argv = [f"tflic {command}"] + argv[2:]
  if any(a in ("-h", "--help", "-help") for a in argv[2:]):
    print(f"usage: tflic {command} [flags] [args]\n\n" + flags.FLAGS.module_help(module))
    return 0
  try:
    positional = flags.FLAGS(absl_argv)[1:]
  except flags.Error as e:
    print(f"tflic {command}: error: {e}", file=sys.stderr)
    return 2
  # Only what the command needs: compress and decompress on the fast path, and info, run
  # without TensorFlow (their module says, from the parsed flags).
  needs_tensorflow = getattr(module, "needs_tensorflow", lambda command, paths: True)
  from tflic import errors  # pylint: disable=g-import-not-at-top
  try:
    if needs_tensorflow(command, positional):
      # TF 2.14 imported after absl's app.run has started runs an absl init callback in
      # the middle of its own import that sets up the eager context too early; tf.functions
      # traced afterwards misbehave (tensor `==` compares identity).
      import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  except errors.TflicError as e:
    print(f"tflic {command}: error: {e}", file=sys.stderr)
    return 2
  from absl import app  # pylint: disable=g-import-not-at-top
  app.run(guarded(function, command), argv=absl_argv)
  return 0


def guarded(function, command):
  """Wraps an absl main so that TflicError and Ctrl-C end it with one line."""
  from tflic import errors  # pylint: disable=g-import-not-at-top

  def run(absl_argv):
    try:
      return function(absl_argv)
    except errors.TflicError as e:
      print(f"tflic {command}: error: {e}", file=sys.stderr)
      sys.exit(2)
    except KeyboardInterrupt:
      print(f"tflic {command}: interrupted", file=sys.stderr)
      sys.exit(130)

  return run


if __name__ == "__main__":
  sys.exit(main())
