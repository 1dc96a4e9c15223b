"""Tasks: prompts, gold answers, answer extraction and rewards (the embedded task, GSM8K, MATH)."""

from softviz.tasks.arithmetic import ArithmeticTask
from softviz.tasks.base import ANSWER_CUE, BOX_OPEN, Example, Task, extract_boxed, normalize_number
from softviz.tasks.gsm8k import GSM8KTask
from softviz.tasks.math import MATHTask

TASKS = ("arithmetic", "arithmetic-story", "arithmetic-plain", "arithmetic-puzzle", "gsm8k", "math")


CHAT_TEMPLATE = ("auto", "on", "off")


def get_task(name: str, chat_template: str = "auto", **kwargs) -> Task:
    """A task by name: 'arithmetic' (the embedded task, alias of 'arithmetic-story'), 'arithmetic-plain'
    (typed questions such as "What is 17 times 3?"), 'arithmetic-puzzle', 'gsm8k' or 'math' (train on MATH, test on MATH-500).

    `kwargs` go to the real-data tasks, e.g. get_task("gsm8k", path="data/gsm8k") for a local copy; without
    them their environment variables (SOFTVIZ_GSM8K_PATH, SOFTVIZ_MATH500_PATH, SOFTVIZ_MATH_TRAIN_PATH)
    or the Hub are used.

    `chat_template`: how an instruct model (a tokenizer with a chat template) is prompted: "auto" is the task's
    default (the chat template for the arithmetic tasks; the paper's raw prompt for gsm8k and math, as the paper
    prompts its instruct models), "on" or "off" override it. Models without a chat template always get the raw
    prompt.
    """
    if chat_template not in CHAT_TEMPLATE:
        raise ValueError(f"chat_template = {chat_template!r} is invalid: allowed {', '.join(CHAT_TEMPLATE)}")
    if name in ("gsm8k", "math"):
        task = (GSM8KTask if name == "gsm8k" else MATHTask)(**kwargs)
    elif kwargs:
        raise ValueError(f"task {name!r} takes no options, got {sorted(kwargs)}")
    elif name in ("arithmetic", "arithmetic-story"):
        task = ArithmeticTask("story")
    elif name in ("arithmetic-plain", "arithmetic-puzzle"):
        task = ArithmeticTask(name.split("-")[1])
    else:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    if chat_template != "auto":
        task.chat = chat_template == "on"
    return task


__all__ = ["ANSWER_CUE", "BOX_OPEN", "ArithmeticTask", "Example", "GSM8KTask", "MATHTask", "TASKS", "Task",
           "extract_boxed", "get_task", "normalize_number"]
