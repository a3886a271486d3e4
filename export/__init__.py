"""Deployment exporters: `python -m export.tflite` (on-device decoding with LiteRT) and
`python -m export.serving` (a TF Serving model base path)."""
