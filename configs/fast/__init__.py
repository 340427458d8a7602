"""Fast CIFAR-10 trainers from outside the reports (airbench), as cifar_jax configs."""
