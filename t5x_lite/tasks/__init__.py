"""Registered tasks. Importing this package registers providers; tasks are built on first lookup."""

from t5x_lite.data.tasks import MixtureRegistry, TaskRegistry
from t5x_lite.tasks import bundled

TaskRegistry.add_provider(bundled.register)

__all__ = ["MixtureRegistry", "TaskRegistry", "bundled"]
