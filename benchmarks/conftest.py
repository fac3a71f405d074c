import torch

# Benchmarks measure the machine as a user has it: all cores for torch (NumPy's BLAS does the same).
torch.set_num_threads(torch.get_num_threads())
