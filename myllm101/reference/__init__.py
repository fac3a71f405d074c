"""NumPy reference implementations: forward and hand-written backward, one concept per file.

Import a module and read it next to its twin in ``myllm101.fast``::

    from myllm101.reference import rmsnorm   # rmsnorm.rmsnorm_forward / rmsnorm_backward
    from myllm101.fast import rmsnorm        # rmsnorm.RMSNorm / rmsnorm.rmsnorm
"""
