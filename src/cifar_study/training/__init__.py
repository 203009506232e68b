"""The training engine every model shares: optimizer, schedule, augmentation, checkpoints."""
