"""Tasks: prompts, gold answers, answer extraction and rewards (the embedded task, GSM8K, MATH)."""

from softviz.tasks.arithmetic import ArithmeticTask
from softviz.tasks.base import ANSWER_CUE, BOX_OPEN, Example, Task, extract_boxed, normalize_number


def get_task(name: str) -> Task:
    """A task by name: 'arithmetic' (the embedded task, alias of 'arithmetic-story') or 'arithmetic-puzzle'."""
    if name in ("arithmetic", "arithmetic-story"):
        return ArithmeticTask("story")
    if name == "arithmetic-puzzle":
        return ArithmeticTask("puzzle")
    raise ValueError(f"unknown task {name!r}; choose one of: arithmetic, arithmetic-story, arithmetic-puzzle")


__all__ = ["ANSWER_CUE", "BOX_OPEN", "ArithmeticTask", "Example", "Task", "extract_boxed", "get_task",
           "normalize_number"]
