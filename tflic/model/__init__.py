"""The model: its Keras layers, transforms, context model, entropy models and loss.

`tflic_model.TflicModel` is the whole model and `checkpoint` builds one from a training
directory. `coding_order`, `windows` and `backends` are shared with the integer model
(`tflic.codec.deterministic`) and import no TensorFlow.
"""
