"""Registered tasks. Importing this package registers providers; tasks are built on first lookup."""

from t5x_lite.data.tasks import MixtureRegistry, TaskRegistry
from t5x_lite.tasks import bundled, tfds_tasks

TaskRegistry.add_provider(bundled.register)
TaskRegistry.add_provider(tfds_tasks.register_default)

__all__ = ["MixtureRegistry", "TaskRegistry", "bundled", "tfds_tasks"]
