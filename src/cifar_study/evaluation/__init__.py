"""Evaluation: accuracy, calibration, test-time augmentation, robustness and comparison."""
