"""Training: the pure steps, the TrainState, and the epoch loop.

    from cifar_jax.train import train_step, eval_step, create_train_state
"""

from cifar_jax.train.loop import evaluate_checkpoint, train_and_evaluate
from cifar_jax.train.state import TrainState, create_train_state
from cifar_jax.train.steps import eval_step, predict_step, train_step

__all__ = ['TrainState', 'create_train_state', 'eval_step', 'evaluate_checkpoint', 'predict_step',
           'train_and_evaluate', 'train_step']
