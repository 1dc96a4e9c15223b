"""Scoped forward hooks on named modules (HF `named_modules()` paths), always removed on exit.

    with recording(model, ["model.layers.1"]) as rec:
        model(...)
    rec.outputs["model.layers.1"]  # list of the module's outputs, one per forward call

A hook function `fn(tensor, *, name, step) -> Tensor | None` may observe (return None) or replace the
module's output (return a tensor), e.g. to ablate a layer during a rollout.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
from torch import Tensor

HookFn = Callable[..., Tensor | None]  # fn(tensor, *, name: str, step: int) -> Tensor | None


class Recorder:
    """Holds what the hooks saw: `outputs[name]` is a list with one detached tensor per forward call."""

    def __init__(self, names: tuple[str, ...], last_position_only: bool, to_cpu: bool):
        self.names = names
        self.last_position_only = last_position_only
        self.to_cpu = to_cpu
        self.outputs: dict[str, list[Tensor]] = {n: [] for n in names}
        self.step = 0

    def _keep(self, name: str, tensor: Tensor) -> None:
        t = tensor.detach()
        if self.last_position_only and t.dim() == 3:
            t = t[:, -1]  # (B, T, d) -> (B, d): the position being decoded
        self.outputs[name].append(t.float().cpu() if self.to_cpu else t)


@contextlib.contextmanager
def recording(model: torch.nn.Module, names: Iterable[str], fn: HookFn | None = None, *,
              last_position_only: bool = True, to_cpu: bool = True):
    """Record (and optionally modify) the outputs of the named modules while the block runs.

    Args:
        model: any torch module; names are paths from `model.named_modules()`.
        names: module paths, e.g. "model.layers.3" or "model.layers.3.mlp".
        fn: optional hook `fn(tensor, *, name, step)`; a returned tensor replaces the output.
        last_position_only: keep only the last position of (B, T, d) outputs (what decoding adds).
        to_cpu: move what is kept to CPU fp32 (so a Trace never holds GPU memory).

    Yields: a Recorder. Unknown names raise ValueError listing a few valid ones.
    """
    names = tuple(names)
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        sample = [n for n in modules if n][:8]
        raise ValueError(f"no module named {unknown} in {type(model).__name__}; names look like {sample}")
    rec = Recorder(names, last_position_only, to_cpu)
    handles = []

    def make_hook(name):
        def hook(module, args, output):
            tensor = output[0] if isinstance(output, tuple) else output
            if fn is not None:
                replaced = fn(tensor, name=name, step=rec.step)
                if replaced is not None:
                    tensor = replaced
                    output = (replaced, *output[1:]) if isinstance(output, tuple) else replaced
            rec._keep(name, tensor)
            return output
        return hook

    try:
        for n in names:
            handles.append(modules[n].register_forward_hook(make_hook(n)))
        yield rec
    finally:
        for h in handles:
            h.remove()
