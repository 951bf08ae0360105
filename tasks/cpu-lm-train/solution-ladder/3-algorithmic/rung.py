"""Rung 3: rung 2 plus a better algorithm: a 20x higher peak learning rate with warm-up and
cosine decay reaches the baseline's loss in well under half its steps."""

import numpy as np

batch_size = 16
beta1, beta2, adam_eps = 0.9, 0.99, 1e-8
seed = 1337
F = np.float32
tune_malloc = True
max_steps = 550
learning_rate = 6e-3
warmup_steps = 20
min_lr_frac = 0.1
