"""The deterministic part of the codec (bitstream v2): exact integer entropy model.

Everything that chooses a coding table or feeds back into the context model (z's
dequantization, the hyper synthesis, the context transformer's mean and table index) is
computed with integers, so that every correct implementation gives the same integers on
any device and thread count. The codec and tflic-lite run the C core
(tflic/codec/rangecoder/entropy_core.c); the numpy model here is its readable reference, and
`quantize` makes the integer parameters both read.
"""
