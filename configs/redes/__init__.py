"""redes report (CIFAR 10 Redes Neuronales): m0-m6 as configs; common.py holds what they share."""
