"""Tooling around the pipeline, not part of it: throwaway project copies, `make demo`, and CI's
reproduction of the metrics with its tolerance gate (`python -m cifar_study.tooling.<module>`).
"""
