import torch

# Benchmarks measure the machine as a user has it: all cores for torch (NumPy's BLAS does the same).
torch.set_num_threads(torch.get_num_threads())


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what the CPU does natively (device.py) in every benchmark JSON, for report headers."""
    from myllm101.device import hardware

    machine_info["myllm101"] = hardware().as_dict()
