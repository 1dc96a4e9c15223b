"""Training checkpoints: written whole or not at all, checked before anything is loaded, resumable under another
process layout (one process, DDP, or FSDP with any process count).

Two kinds: `checkpoint.pt`, the whole state in one file (under FSDP gathered on process 0, the optimizer keyed
by parameter name); and, when an FSDP run's accelerate config asks for sharded checkpoints, a folder of each
process's shards (softviz.sharding.save_sharded). train() keeps only the newest kind.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from softviz import sharding
from softviz.files import atomic_file

if TYPE_CHECKING:
    from softviz.parallel import Parallel

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(out: Path, model, optimizer, scheduler, state: dict, par: "Parallel | None" = None) -> None:
    """Everything needed to resume exactly, in one file written whole or not at all (by the main process).
    Under FSDP the shards are gathered into whole states first (every process must call this), with the
    optimizer's state keyed by parameter name; or, when the accelerate config asks for sharded checkpoints,
    each process writes its own shards (sharding.save_sharded). Only the newest kind is kept."""
    if par is not None and par.sharded_checkpoints:  # each process writes its shards; nothing is gathered
        sharding.save_sharded(out, model, optimizer, {"scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                                                      **state}, main=par.main, barrier=par.barrier)
        if par.main:
            (out / CHECKPOINT).unlink(missing_ok=True)  # one kind of checkpoint at a time: the newest
        return
    if par is not None and par.fsdp:
        model_sd, optim_sd = par.full_state(model, optimizer)
    else:
        model_sd, optim_sd = model.state_dict(), optimizer.state_dict()
    if par is not None and not par.main:
        return
    with atomic_file(out / CHECKPOINT) as tmp:
        torch.save({"model": model_sd, "optimizer": optim_sd, "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(), **state}, tmp)
    shutil.rmtree(out / sharding.SHARDED_CHECKPOINT, ignore_errors=True)  # one kind at a time: the newest


def load_named_optimizer_state(model, optimizer, optim_sd: dict) -> None:
    """Load an optimizer state keyed by parameter name (get_optimizer_state_dict's form: whole tensors, or already
    cut like their parameters) into `optimizer`, each state tensor cut like its parameter (a DTensor shard under
    FSDP; whole otherwise). The groups are matched by parameter name, so the state of one layout (FSDP puts
    sharded and whole parameters in separate groups) loads into another. torch's
    set_optimizer_state_dict first steps a fresh optimizer with zero gradients to create its state, which left
    FSDP's gathered embedding without storage in the next backward; this loads the state directly."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    saved = optim_sd.get("state", {})
    saved_group = {name: g for g in optim_sd.get("param_groups", []) for name in g["params"]}
    state, groups, index = {}, [], 0
    for group in optimizer.param_groups:
        ids = []
        first = next((n for p in group["params"] for n in names.get(id(p), []) if n in saved_group), None)
        if first is None:
            raise ValueError("the checkpoint's optimizer holds none of this model's parameters: it was written "
                             "for another model; resume with the model the run started from")
        for p in group["params"]:
            name = next((n for n in names.get(id(p), []) if n in saved), None)
            if name is not None:
                state[index] = {k: distribute_tensor(v.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
                                if isinstance(p, DTensor) and torch.is_tensor(v) and not isinstance(v, DTensor)
                                and v.dim() > 0 else v
                                for k, v in saved[name].items()}
            ids.append(index)
            index += 1
        groups.append({**{k: v for k, v in saved_group[first].items() if k != "params"}, "params": ids})
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def load_scheduler_state(scheduler, sd: dict) -> None:
    """Load a LambdaLR state, also one saved with another grouping of the same parameters (under FSDP the
    sharded and the whole parameters are separate groups): the schedule is a function of the step, so the step
    is taken and each group's rate recomputed from its own base rate."""
    n = len(scheduler.optimizer.param_groups)
    if len(sd.get("base_lrs", [])) == n:
        scheduler.load_state_dict(sd)
        return
    scheduler.load_state_dict({**sd, "base_lrs": list(scheduler.base_lrs), "lr_lambdas": [None] * n})
    lrs = [base * factor(scheduler.last_epoch) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs


def _by_name(optim_sd) -> bool:
    """An optimizer state keyed by parameter name (written under FSDP), not by position."""
    return isinstance(optim_sd, dict) and any(isinstance(k, str) for k in optim_sd.get("state", {}))


def load_checkpoint(path: Path, model, optimizer, scheduler, *, config: dict | None = None,
                    need_ref: bool = False, par: "Parallel | None" = None) -> dict:
    """Resume from `path`: every check runs before anything is loaded into the model, optimizer or RNG, so a
    refused checkpoint leaves them as they were. `config` (dataclasses.asdict of the run's RLConfig) must
    equal the one the checkpoint was written with."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"cannot read checkpoint {path} ({err.__class__.__name__}); it may be truncated. "
                         "Delete it to start over, or point output_dir elsewhere.") from None
    parts = ["model", "optimizer", "scheduler", "rng", "step", "best", "sigma", "config"] + (["ref"] if need_ref else [])
    _check_parts(path, ck, parts, config)
    expected = model.state_dict()
    for name, state in [("model", ck["model"])] + ([("ref", ck["ref"])] if need_ref else []):
        _check_state(path, name, state, expected, FIX)
    sharded = par is not None and par.fsdp
    if sharded and not _by_name(ck["optimizer"]):
        raise ValueError(f"checkpoint {path} was written by a run without FSDP (its optimizer state is keyed by "
                         "position): resume it the way it was run, or start over under FSDP (--restart)")
    if sharded or _by_name(ck["optimizer"]):
        if sharded:
            par.load_full_state(model, optimizer, ck["model"], ck["optimizer"])
        else:  # written under FSDP, resumed without it
            model.load_state_dict(ck["model"])
            load_named_optimizer_state(model, optimizer, ck["optimizer"])
    else:
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
    load_scheduler_state(scheduler, ck["scheduler"])
    torch.set_rng_state(ck["rng"])
    return ck


FIX = "use a new output_dir, or resume=False (softviz train --restart) to start over"


def _check_parts(path: Path, ck, parts: list[str], config: dict | None) -> None:
    """A checkpoint holds every part, was written with this RLConfig, and its RNG state is whole."""
    missing = [k for k in parts if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}: it is damaged or was not written by softviz train; {FIX}")
    if config is not None and ck["config"] != config:
        old = ck["config"] if isinstance(ck["config"], dict) else {}
        diff = [f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in sorted(set(old) | set(config))
                if old.get(k) != config.get(k)]
        raise ValueError(f"{path} was written with another RLConfig ({'; '.join(diff[:6])}); {FIX}")
    if not isinstance(ck["rng"], torch.Tensor) or ck["rng"].dtype != torch.uint8:
        raise ValueError(f"checkpoint {path} holds a damaged RNG state; {FIX}")


def load_sharded_checkpoint(folder: Path, model, optimizer, scheduler, *, config: dict | None = None,
                            need_ref: bool = False) -> dict:
    """Resume from a sharded checkpoint (sharding.save_sharded), resharded to this run's processes or into a
    whole model on one process. As load_checkpoint: every check runs before anything is loaded."""
    ck = sharding.read_sharded_state(folder)
    _check_parts(folder, ck, ["scheduler", "rng", "step", "best", "sigma", "config", "param_groups"]
                 + (["ref"] if need_ref else []), config)
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    expected = {k: torch.empty(v.shape, device="meta") for k, v in get_model_state_dict(model).items()}
    saved = {k: torch.empty(shape, device="meta") for k, shape in sharding.sharded_shapes(folder).items()}
    _check_state(folder, "model", saved, expected, FIX)
    load_named_optimizer_state(model, optimizer, sharding.load_sharded(folder, model, optimizer, ck["param_groups"]))
    load_scheduler_state(scheduler, ck["scheduler"])
    torch.set_rng_state(ck["rng"])
    return ck


def _check_state(path: Path, name: str, state, expected: dict, fix: str) -> None:
    """The saved weights `state` fit a model whose state_dict is `expected`: same names, same shapes."""
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path}: its {name} weights are damaged; {fix}")
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and tuple(getattr(state[k], "shape", ())) != tuple(expected[k].shape)]
    if missing or extra or shapes:
        detail = "; ".join(f"{what} {keys[:3]}{' ...' if len(keys) > 3 else ''}" for what, keys in
                           (("missing", missing), ("unexpected", extra), ("other shapes", shapes)) if keys)
        raise ValueError(f"checkpoint {path} was written for another model ({name} weights: {detail}); resume with "
                         f"the model it was trained from, or {fix}")
