"""Rung 2: float32, the fused backward, malloc tuned; still the baseline's recipe."""

import numpy as np

batch_size = 16
beta1, beta2, adam_eps = 0.9, 0.99, 1e-8
seed = 1337
F = np.float32
tune_malloc = True
max_steps = 1200
learning_rate = 3e-4
warmup_steps = 0
min_lr_frac = 1.0  # constant
