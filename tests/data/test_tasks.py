"""Task and mixture registries: names are never silently shadowed, mixtures are checked when made."""

import pytest

from t5x_lite.data.tasks import DataError, Mixture, Task, TaskRegistry


def test_a_user_task_cannot_take_a_lazily_registered_name():
    import t5x_lite.tasks  # noqa: F401  (adds the bundled and TFDS providers, which run on first lookup)

    mine = Task(name="bundled_sentiment", source=lambda split: [], output_features={})
    with pytest.raises(DataError, match="task 'bundled_sentiment' is already registered"):
        TaskRegistry.add(mine)
    assert TaskRegistry.get("bundled_sentiment") is not mine


@pytest.mark.parametrize("tasks, message", [
    ([], "has no tasks"),
    ([("a", 1.0), ("a", 2.0)], "lists task 'a' twice"),
    ([("a", 0.0)], "task 'a' has rate 0.0"),
    ([("a", -1)], "task 'a' has rate -1"),
    ([("a", float("nan"))], "task 'a' has rate nan"),
    ([("a", float("inf"))], "task 'a' has rate inf"),
    (["ab"], r"each entry must be \(task name, rate\), got 'ab'"),
])
def test_a_mixture_is_checked_when_made(tasks, message):
    with pytest.raises(DataError, match=rf"mixture 'm'.*{message}"):
        Mixture(name="m", tasks=tasks)


def test_numpy_rates_are_fine():
    import numpy as np

    assert Mixture(name="m", tasks=[("a", np.float32(0.5)), ("b", np.int64(2))]).tasks[0][1] == 0.5


def test_providers_run_in_order_and_may_look_up_what_earlier_ones_registered():
    from t5x_lite.data.tasks import _Registry

    registry = _Registry("task")
    order = []

    def first():
        order.append("first")
        registry.add(Task(name="base", source=lambda split: [], output_features={}))
        order.append("first done")

    def second():
        order.append("second")
        base = registry.get("base")
        registry.add(Task(name="variant", source=base.source, output_features={}))

    registry.add_provider(first)
    registry.add_provider(second)
    assert registry.names() == ["base", "variant"]
    assert order == ["first", "first done", "second"]
