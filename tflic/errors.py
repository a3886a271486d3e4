"""Errors that the command line reports as one line instead of a traceback."""


class TflicError(Exception):
  """A user-facing failure: bad input, a corrupt file, a wrong model.

  The command line prints `tflic: error: <message>` and exits with status 2.
  """
