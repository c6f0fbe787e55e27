"""A simulated cloud, shipped for demos, tests and dry runs.

It keeps no state of its own: what exists is what the orchestrator's inventory says,
so a simulated server lives exactly as long as its inventory row. Every call of the
same (seed, instance, task, attempt) sleeps and fails the same way, so a run can be
replayed. Its kinds and their params are declared in `_kinds`.
"""

from providers.sim._provider import DEFAULT_PLANS, DEFAULT_ZONES, SimProvider

__all__ = ["DEFAULT_PLANS", "DEFAULT_ZONES", "SimProvider"]
