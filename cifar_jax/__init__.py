"""cifar_jax: the Keras CIFAR-10 reports' experiments in JAX/Flax (see README.md)."""

from cifar_jax import xla_cpu as _xla_cpu

_xla_cpu.apply_cpu_defaults()  # Before jax makes its CPU backend (flags are read only then).
