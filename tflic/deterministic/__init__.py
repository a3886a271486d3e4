"""The deterministic part of the codec (bitstream v2): exact integer entropy model.

Everything that chooses a coding table or feeds back into the context model (z's
dequantization, the hyper synthesis, the context transformer's mean and table index) is
computed here with integers, so that every correct implementation, TensorFlow on any
device and thread count or numpy without TensorFlow, gives the same integers.
"""
