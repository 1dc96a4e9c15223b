"""What a visitor may ask for: allow-listed models only, numbers within the host's limits; and how a refusal (or a
bug) reaches the page: `visitor_errors`."""

from __future__ import annotations

import functools
import inspect
import logging
import numbers

import gradio as gr

from softviz import load_model
from softviz.checks import is_int, is_real

from .settings import EMBEDDED, Settings

log = logging.getLogger("softviz.app")


@functools.lru_cache(maxsize=4)
def _cached_model(name: str, device: str | None):
    return load_model(None if name == EMBEDDED else name, device=device)


def check_offered(name, settings: Settings) -> None:
    if name not in settings.models:
        raise ValueError(f"model {name!r} is not offered here; choose one of: {', '.join(settings.models)}")


def get_model(name: str, settings: Settings):
    """The shared, read-only (model, tokenizer) of an allow-listed model, loaded once per process."""
    check_offered(name, settings)
    return _cached_model(name, settings.device)


def whole(name: str, value, low: int, high: int) -> int:
    """`value` as an int, or a ValueError naming the widget. Widgets send JSON numbers, so 8.0 is 8; NaN, ±inf,
    2.5, True and text are refused (softviz.checks' rule, with the widget's name and range)."""
    if is_int(value) or (is_real(value) and float(value).is_integer()):
        return int(value)
    raise ValueError(f"{name} must be a whole number between {low} and {high}, got {value!r}")


def clamped(name: str, value, low: int, high: int) -> int:
    """A slider's position as a whole number, moved into [low, high] (a stale slider may point past the end)."""
    return min(max(whole(name, value, low, high), low), high)


def check_int(name: str, value, low: int, high: int) -> int:
    value = whole(name, value, low, high)
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high} on this server, got {value}")
    return value


def check_float(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # text, None, True: not a number
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not low <= value <= high:  # NaN fails here too
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return value


def visitor_errors(fn):
    """A visitor's mistake (ValueError, or a gr.Error raised on purpose) becomes a readable message in the page
    (gr.Error) and one log line; anything else is a bug: logged with its traceback, and a polite message."""
    def convert(err: Exception) -> gr.Error:
        if isinstance(err, (gr.Error, ValueError)):
            message = err.message if isinstance(err, gr.Error) else str(err)
            log.info("visitor error in %s: %s", fn.__name__, " ".join(str(message).split()))  # one line
            shown = err if isinstance(err, gr.Error) else gr.Error(message)
        else:
            log.exception("unexpected error in %s", fn.__name__)
            shown = gr.Error(f"Something went wrong on the server ({type(err).__name__}: {err}). Please try "
                             "again; if it persists, tell the host.")
        shown.print_exception = False  # Gradio would print a traceback for every gr.Error; the log says enough
        return shown

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:
                raise convert(err) from err
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise convert(err) from err
    return wrapper
