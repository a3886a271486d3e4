"""Keras's Adam with one fused update op per variable."""

import tensorflow as tf


class FusedAdam(tf.keras.optimizers.Adam):
  """`tf.keras.optimizers.Adam` (the same variables, checkpoints and arithmetic, up to
  float rounding) that updates each float32 variable with dense gradients by one
  `ResourceApplyAdam` op, its step's scalars (learning rate, bias corrections) computed
  once per step.

  Keras's own update runs ~25 small ops per variable, the scalars recomputed for each:
  about 7,000 ops per step for `medium`'s 236 variables, which on CPUs cost more in op
  dispatch than their arithmetic. Sparse gradients, AMSGrad, other dtypes and XLA-compiled
  updates (Keras's default on GPUs) keep Keras's update.
  """

  _step_scalars = None

  def _distributed_apply_gradients_fn(self, distribution, grads_and_vars, **kwargs):
    # Cross-replica context, once per step: the scalars every variable's update shares.
    step = tf.cast(self.iterations + 1, tf.float32)
    # object.__setattr__: a tuple set as an attribute would be tracked (a checkpoint
    # dependency holding on to this step's graph tensors).
    object.__setattr__(self, "_step_scalars", (
        tf.cast(self.learning_rate, tf.float32),
        tf.pow(tf.cast(self.beta_1, tf.float32), step),
        tf.pow(tf.cast(self.beta_2, tf.float32), step)))
    try:
      return super()._distributed_apply_gradients_fn(distribution, grads_and_vars, **kwargs)
    finally:
      object.__setattr__(self, "_step_scalars", None)

  def update_step(self, gradient, variable):
    if (self._step_scalars is None or self.jit_compile or self.amsgrad or
        isinstance(gradient, tf.IndexedSlices) or variable.dtype != tf.float32):
      return super().update_step(gradient, variable)
    learning_rate, beta_1_power, beta_2_power = self._step_scalars
    index = self._index_dict[self._var_key(variable)]
    return tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=self._momentums[index].handle,
        v=self._velocities[index].handle, beta1_power=beta_1_power,
        beta2_power=beta_2_power, lr=learning_rate, beta1=tf.cast(self.beta_1, tf.float32),
        beta2=tf.cast(self.beta_2, tf.float32), epsilon=tf.cast(self.epsilon, tf.float32),
        grad=gradient, use_locking=False)
