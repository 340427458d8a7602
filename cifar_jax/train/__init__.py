"""Training: the pure steps, the TrainState, the setup a config builds, and the epoch loop.

    from cifar_jax.train import train_step, eval_step, create_train_state_from_config
    state, splits = create_train_state_from_config(config)   # what a run of config starts from

Names load on first use, so reading run files (`cifar_jax.train.outputs`, used by reports)
does not import the loop and its checkpointing stack.
"""

import importlib

_HOMES = {
    'TrainState': 'state', 'create_train_state': 'state',
    'create_train_state_from_config': 'setup', 'RunSetup': 'setup',
    'train_step': 'steps', 'eval_step': 'steps', 'predict_step': 'steps',
    'train_and_evaluate': 'loop', 'evaluate_checkpoint': 'loop', 'Run': 'loop',
}
__all__ = sorted(_HOMES)


def __getattr__(name):
  if name not in _HOMES:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  return getattr(importlib.import_module(f'{__name__}.{_HOMES[name]}'), name)


def __dir__():
  return sorted(set(globals()) | set(_HOMES))
