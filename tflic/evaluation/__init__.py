"""Rate-distortion evaluation: codecs, metrics, BD-rate, the harness and its reports.

`tflic eval` (tflic/evaluation/main.py) ties them together; a new codec plugs in by subclassing
`codecs.Codec` and calling `codecs.register`.
"""

from tflic.evaluation.codecs import Codec
from tflic.evaluation.codecs import make_codec
from tflic.evaluation.codecs import register
