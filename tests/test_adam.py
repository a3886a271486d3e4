"""FusedAdam (tflic/training/adam.py) against Keras's Adam, whose updates and
checkpoints it keeps."""

import numpy as np
import tensorflow as tf

from tflic.training import adam


def _variables():
  return [tf.Variable(tf.random.stateless_normal([7, 5], [1, 1])),
          tf.Variable(tf.random.stateless_normal([5], [2, 2])),
          tf.Variable(tf.random.stateless_normal([11, 3], [3, 3]))]  # gets a sparse gradient


def _optimizer(cls):
  schedule = tf.keras.optimizers.schedules.CosineDecay(1e-2, 100, warmup_target=3e-2,
                                                      warmup_steps=2)
  return cls(schedule, global_clipnorm=1.0)


def _train(cls, steps=4):
  variables = _variables()
  optimizer = _optimizer(cls)

  @tf.function
  def step(scale):
    with tf.GradientTape() as tape:
      rows = tf.gather(variables[2], [0, 4, 4, 9])
      loss = (tf.reduce_sum(tf.sin(variables[0] * scale)) +
              tf.reduce_sum(variables[1]**3) + tf.reduce_sum(rows**2))
    gradients = tape.gradient(loss, variables)
    assert isinstance(gradients[2], tf.IndexedSlices)
    optimizer.apply_gradients(zip(gradients, variables))

  for i in range(steps):
    step(tf.constant(1.0 + i))
  return variables, optimizer


def test_fused_adam_updates_as_keras_adam():
  """The same variables after steps with a schedule, clipping and a sparse gradient; the
  fused op does serve the dense ones."""
  mine, optimizer = _train(adam.FusedAdam)
  theirs, _ = _train(tf.keras.optimizers.Adam)
  for a, b in zip(mine, theirs):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
  assert int(optimizer.iterations) == 4
  assert "_step_scalars" not in optimizer._trackable_children()  # pylint: disable=protected-access
  graph = tf.function(lambda: optimizer.apply_gradients(
      zip([tf.ones([7, 5]), tf.ones([5])], mine[:2]))).get_concrete_function().graph
  assert "ResourceApplyAdam" in {op.type for op in graph.get_operations()}


def test_checkpoints_are_interchangeable_with_keras_adam(tmp_path):
  """A checkpoint of Keras's Adam restores into FusedAdam in full, and training goes on
  alike."""
  theirs, keras_optimizer = _train(tf.keras.optimizers.Adam, steps=2)
  path = tf.train.Checkpoint(variables=theirs, optimizer=keras_optimizer).save(
      str(tmp_path / "ckpt"))
  mine = _variables()
  optimizer = _optimizer(adam.FusedAdam)
  optimizer.build(mine)
  tf.train.Checkpoint(variables=mine, optimizer=optimizer).restore(path).assert_consumed()
  assert int(optimizer.iterations) == 2
  gradients = [tf.ones([7, 5]), tf.fill([5], -2.0), tf.ones([11, 3])]
  optimizer.apply_gradients(zip(gradients, mine))
  keras_optimizer.apply_gradients(zip(gradients, theirs))
  for a, b in zip(mine, theirs):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
