"""Argument parsing of the `softviz` command: one-line errors, and argument types whose errors name the flag."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from softviz.config import PRESETS, Mode


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, `softviz <cmd>: error: <message>` (exit 2), without the usage
    block: `softviz <cmd> -h` shows that."""

    def error(self, message):
        hint = f" (`{self.prog} -h` lists the commands)" if " " not in self.prog else ""  # no command given
        self.exit(2, f"{self.prog}: error: {_one_line(message)}{hint}\n")


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


def _error_message(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None:  # "[Errno 20] Not a directory: 'x'" -> path first
        paths = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        return f"{paths}: {err.strerror or err.__class__.__name__}"
    return _one_line(err) or err.__class__.__name__


# ---- argument types: each error names the flag (argparse prefixes "argument -n: ") ----------------------
def _int_at_least(low: int | None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or (low is not None and value < low):
            bound = "" if low is None else f" >= {low}"
            raise argparse.ArgumentTypeError(f"expected an integer{bound}, got {text!r}")
        return value
    return parse


_positive_int, _non_negative_int = _int_at_least(1), _int_at_least(0)


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _int_list(low: int, *, empty_ok: bool = False):
    def parse(text: str) -> tuple[int, ...]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        try:
            values = tuple(int(x) for x in items)
        except ValueError:
            values = None
        if values is None or any(v < low for v in values) or not (values or empty_ok):
            raise argparse.ArgumentTypeError(f"expected comma-separated integers >= {low}, got {text!r}")
        return values
    return parse


BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _bool(text: str) -> bool:
    """Strict: a typo such as `ture` is an error, not False."""
    key = text.strip().lower()
    if key not in BOOLEANS:
        raise argparse.ArgumentTypeError(f"expected one of {'/'.join(BOOLEANS)} (any case), got {text!r}")
    return BOOLEANS[key]


def _mode(text: str) -> Mode:
    try:
        return Mode.preset(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _mode_list(text: str) -> list[Mode]:
    names = [m for m in text.split(",") if m.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"no mode given in {text!r}; choose from: {', '.join(PRESETS)}")
    return [_mode(m) for m in names]


def _check_output(flag: str, path: str, *, folder: bool) -> None:
    """Refuse an output path that cannot be written, before any work is done: the error names the flag and
    the path (instead of a FileExistsError from mkdir at the end of a long run)."""
    if not path:
        raise ValueError(f"{flag} is empty: give a {'folder' if folder else 'file'} path")
    p = Path(path).expanduser()
    if p.exists() and folder and not p.is_dir():
        raise ValueError(f"{flag} {path}: it is a file, not a folder")
    if p.exists() and not folder and p.is_dir():
        raise ValueError(f"{flag} {path}: it is a folder; give a file name")
    for parent in ([p] if folder else []) + list(p.absolute().parents):
        if parent.exists():  # the nearest existing folder: everything below it gets created
            if not parent.is_dir():
                raise ValueError(f"{flag} {path}: {parent} is a file, so nothing can be created under it")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ValueError(f"{flag} {path}: {parent} is not writable")
            return


def _apply_config_file(args) -> None:
    """Fill the train flags not given on the command line from `--config FILE`: a JSON object of RLConfig
    fields plus an optional "model" (configs/ holds the paper's settings). Flags given on the command line win."""
    if args.config is None:
        return
    for key, value in _read_config_file(args.config).items():
        if getattr(args, key) is None:  # every train flag defaults to None, so None means "not given"
            setattr(args, key, value)


def _read_config_file(path: str) -> dict:
    """`--config FILE`: a JSON object of RLConfig fields plus an optional "model", keys and booleans checked."""
    import dataclasses
    import json

    from softviz.config import RLConfig

    try:
        settings = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--config {path}: {err}") from None
    if not isinstance(settings, dict):
        raise ValueError(f"--config {path}: expected a JSON object of settings")
    fields = {f.name: f for f in dataclasses.fields(RLConfig)}
    allowed = ["model", *fields]
    for key, value in settings.items():
        if key not in allowed:
            raise ValueError(f"--config {path}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
        if key in fields and isinstance(fields[key].default, bool) and not isinstance(value, bool):
            raise ValueError(f"--config {path}: {key} must be true or false, got {value!r}")
    return settings


def _add_rl_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per RLConfig field (the dataclass is the single source of truth for names and defaults)."""
    import dataclasses

    from softviz.config import RLConfig

    for f in dataclasses.fields(RLConfig):
        flag = "--" + f.name.replace("_", "-")
        # argument types check the syntax (an integer, a finite number, true/false); RLConfig the ranges
        if f.name == "trace_steps":
            p.add_argument(flag, type=_int_list(1, empty_ok=True), default=None,
                           help="comma-separated steps whose rollouts are saved as Traces")
        elif f.name == "epsilon":
            p.add_argument(flag, type=_finite_float, default=None, help="PPO-style ratio clip (default: none)")
        elif f.name == "micro_batch":
            p.add_argument(flag, type=_int_at_least(1), default=None,
                           help="rollouts per forward-backward pass; gradients accumulate, the step is the same "
                                "(default: all rollouts of a step at once)")
        elif f.name == "noise_scale":
            p.add_argument(flag, type=_finite_float, default=None,
                           help="γ of soft/fuzzy rollouts (default: the preset's 0.33)")
        elif isinstance(f.default, bool):
            p.add_argument(flag, type=_bool, default=None, metavar="{true,false}", help=f"(default: {f.default})")
        elif isinstance(f.default, int):
            p.add_argument(flag, type=_int_at_least(None), default=None, help=f"(default: {f.default})")
        elif isinstance(f.default, float):
            p.add_argument(flag, type=_finite_float, default=None, help=f"(default: {f.default})")
        else:
            p.add_argument(flag, type=type(f.default), default=None, help=f"(default: {f.default})")
