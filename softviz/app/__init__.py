"""The softviz Gradio app: compare CoT decoding modes side by side, fine-tune live, explore saved Traces.

A thin UI over the library, one module per concern:

    settings     Settings (the host's limits: flags, SOFTVIZ_* variables), parse_args, the app's fixed choices
    session      Session (one visitor's things), Sessions (browser tabs), trace folders, clean-up on signals
    checks       allow-listed models, numbers within limits, visitor_errors (a mistake -> a message in the page)
    views        Outputs (a handler's values by name), text and figures shared by the tabs
    compare_tab  Compare's handlers (CompareView)   train_tab  Train's (TrainView)
    explore_tab  Explore's (OpenedTrace, ExploreView, StepView)
    layout       the widgets and build_demo(), which wires them to the handlers
    serve        warm_up, launch, main (`python app/app.py`, `softviz app`, `python -m softviz.app`)

Handlers take widget values, the host's `Settings` and the visitor's `Session`, and return (or yield) named
Outputs; `build_demo()` wires them into gr.Blocks; `main()` reads flags and SOFTVIZ_* environment variables and
launches. Importing this package imports gradio; `import softviz` alone does not.
"""

from .checks import get_model, visitor_errors
from .compare_tab import (AcrossModes, CompareSlot, CompareView, Problem, build_modes, compare, example_problems,
                          first_problem, on_compare, on_export, on_rollout, pick_example, random_problem)
from .explore_tab import (ExploreView, OpenedTrace, StepChange, StepView, on_explore_rollout, on_explore_step,
                          on_pick, on_upload)
from .layout import build_demo
from .selection import SelectionView, on_branch, on_cell, on_next_branch, on_previous_branch, selection_view
from .serve import launch, main, warm_up
from .session import Session, Sessions
from .settings import BEFORE_AFTER_PROMPTS, DEFAULT_MODES, TRAIN_DEFAULTS, TRAIN_EVAL_SIZE, Settings, parse_args
from .train_tab import TrainView, on_cancel, on_train, on_train_requested
from .views import Outputs, RolloutView, column_header, summary_markdown

__all__ = [
    "AcrossModes", "BEFORE_AFTER_PROMPTS", "CompareSlot", "CompareView", "DEFAULT_MODES", "ExploreView", "TRAIN_DEFAULTS", "TRAIN_EVAL_SIZE", "OpenedTrace",
    "Outputs", "Problem", "RolloutView", "SelectionView", "Session", "Sessions", "Settings", "StepChange", "StepView", "TrainView", "build_demo",
    "build_modes", "column_header", "compare", "example_problems", "first_problem", "get_model", "pick_example", "launch", "main", "on_cancel",
    "on_branch", "on_cell", "on_compare", "on_explore_rollout", "on_explore_step", "on_next_branch", "on_previous_branch", "on_export", "on_pick", "on_rollout", "on_train", "on_train_requested",
    "on_upload", "parse_args", "random_problem", "selection_view", "summary_markdown", "visitor_errors", "warm_up",
]
