import os

from hypothesis import HealthCheck, settings

# deadline=None: torch's first call in a process is slow; examples stay few so CI stays fast.
settings.register_profile(
    "default", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
