"""Reproduce and extend a compact-ResNet vs DenseNet-BC study on CIFAR-10 as a DVC pipeline."""
