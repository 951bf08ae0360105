name = "{{NAME}}"
kind = "speedup"
description = "{{TITLE}}: a Triton ModelNew (speedup against PyTorch eager)"

[resources]
cpus = 2
memory = "8g"
gpus = 1

[agent]
max_turns = 100
timeout_s = 3600

[verifier]
command = "python3 verify.py"
timeout_s = 1800
repeats = 3

[scoring]
reference = 1.0       # KernelBench ships no Triton solution: the oracle submits the starting point (PyTorch's Model)
base = 1.0            # the unchanged starting point is the PyTorch baseline itself
plausible_max = 20.0
tolerance = 0.3
