"""Coding without TensorFlow: LiteRT networks and the portable C entropy core (the
integer entropy model, coding loop and range coder, `tflic.codec.rangecoder.entropy_core`).

Nothing in this package imports TensorFlow: it is what a server or an app that only
decodes installs (ai-edge-litert, numpy, Pillow and the C coder), and the fast path of
`tflic compress` and `tflic decompress` (`encoder`, `decoder`).
"""
