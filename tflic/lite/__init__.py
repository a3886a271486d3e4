"""Decoding without TensorFlow: LiteRT networks, the numpy integer entropy model and the
portable C range coder (`tflic.rangecoder`).

Nothing in this package imports TensorFlow: it is what a server or an app that only
decodes installs (ai-edge-litert, numpy, Pillow and the C coder).
"""
