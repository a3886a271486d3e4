"""Deployment with TensorFlow: the SavedModel export and the split encoder's client.

The LiteRT exporters are in `export/`; the codec without TensorFlow is `tflic.lite`.
"""
