"""A Sequential that runs its layers one after the other, without a functional graph."""

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="tflic")
class Stack(tf.keras.Sequential):
  """`tf.keras.Sequential` (same layers, weights and checkpoint keys) that calls its
  layers in order on the tensors it is given.

  Keras's Sequential builds a functional graph of its layers for each input shape it
  has not seen (`_build_graph_network_for_inferred_shape`), calling every layer on
  symbolic tensors once more: half of the time to trace a training step or a codec of
  tflic's transforms went there. Without that graph, Sequential.call runs the layers
  directly, as a subclassed model would.
  """

  def _build_graph_network_for_inferred_shape(self, input_shape, input_dtype=None):
    del input_shape, input_dtype  # no graph network: call() runs the layers in order
