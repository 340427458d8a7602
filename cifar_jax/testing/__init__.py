"""Code that tests and benchmarks share: the Keras references cifar_jax is checked against
(keras_reference.py) and what two runs are compared by (runs.py).

Keras is a test and benchmark dependency, not cifar_jax's: nothing under cifar_jax imports this
package, and this file imports none of its modules (keras_reference imports Keras itself).
"""
