"""FSDP2 for `softviz train` under `accelerate launch` with an FSDP config (configs/accelerate/fsdp_*.yaml).

accelerate's launcher turns the config into environment variables (ACCELERATE_USE_FSDP, FSDP_VERSION,
FSDP_RESHARD_AFTER_FORWARD, ...), read here through accelerate's own FullyShardedDataParallelPlugin. softviz then
shards the model with torch's `fully_shard`: one unit per transformer block (the model's `_no_split_modules`, or
the config's fsdp_transformer_layer_cls_to_wrap), then the root, whose own parameters (input embedding, LM head,
final norm) stay whole on every process (see `replicated`). It shards the model itself, as it all-reduces DDP
gradients itself, because accelerate's `prepare` enables FSDP only on GPUs, while the same code must run (and be
tested) on CPU processes with gloo.

What softviz needs beyond a sharded forward: rollouts in lock-step across processes (`generate.lock_step`), since
every forward gathers each block from all processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

import torch


def fsdp_requested() -> bool:
    """`accelerate launch` was given an FSDP config (it sets ACCELERATE_USE_FSDP for every process)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def plugin():
    """accelerate's reading of the FSDP config (from the environment its launcher set). Only FSDP2 is supported."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    p = FullyShardedDataParallelPlugin()
    if int(p.fsdp_version or 1) != 2:
        raise ValueError(f"fsdp_version = {p.fsdp_version} in the accelerate config: softviz shards with FSDP2 "
                         "(fully_shard); set fsdp_version: 2 (see configs/accelerate/fsdp_1node.yaml)")
    check(p)
    return p


def check(p) -> None:
    """Refuse the FSDP settings softviz would otherwise ignore: it wraps one unit per transformer block, keeps
    parameters on the accelerator and stores no activations for a second forward. (fsdp_state_dict_type is read:
    see sharded_checkpoints_wanted.)"""
    fix = " in the accelerate config (see configs/accelerate/fsdp_1node.yaml)"
    if getattr(p.auto_wrap_policy, "__name__", None) != "transformer_auto_wrap_policy":
        wrap = getattr(p.auto_wrap_policy, "__name__", "no wrapping")
        raise ValueError(f"fsdp_auto_wrap_policy gives {wrap}: softviz shards one unit per transformer block; set "
                         "fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP" + fix)
    if p.activation_checkpointing:
        raise ValueError("fsdp_activation_checkpointing: true is not supported by softviz train (the loss pass keeps "
                         "its activations; `softviz plan` shows what they cost); set it to false" + fix)
    if type(p.cpu_offload).__name__ == "CPUOffloadPolicy":
        raise ValueError("fsdp_offload_params: true is not supported by softviz train (a rollout would copy every "
                         "block from CPU memory at every token); set it to false and spread the model over more "
                         "processes" + fix)


def block_classes(model, names=None) -> set[str]:
    """The class names of the model's transformer blocks: `names` (the config's list) or the model's own
    _no_split_modules. ValueError when the model has none of them."""
    wanted = set(names or getattr(model, "_no_split_modules", None) or [])
    found = {type(m).__name__ for m in model.modules()} & wanted
    if not found:
        raise ValueError(f"cannot find the transformer blocks to shard in {type(model).__name__} (looked for "
                         f"{sorted(wanted) or 'its _no_split_modules'}); name them with "
                         "fsdp_transformer_layer_cls_to_wrap in the accelerate config")
    return found


def replicated(model) -> list:
    """The parameters FSDP leaves whole (`shard` keeps those outside the transformer blocks: input embedding, LM
    head, final norm) on every process, their gradients averaged by softviz (Parallel.mean_grads). softviz reads E
    outside the model's forward at every step (p·E, σ, nearest tokens, the replayed inputs of the loss): a sharded
    E had to be gathered around FSDP's own schedule, and a resumed run's backward then found the gathered LM head
    freed. They are a small part of a large model (Llama-3.1-8B: 1.05 B of 8.03 B parameters)."""
    return [p for p in model.parameters() if type(p).__name__ != "DTensor"]


def shard(model, device: torch.device, reshard_after_forward: bool = True, names=None):
    """Shard `model` in place with FSDP2 across the default process group and return it. A model that was loaded
    whole on process 0 only (FSDP's RAM-efficient loading: the others hold it on the meta device) is sharded on
    the meta device and filled from process 0's weights, so no other process ever holds it whole."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import fully_shard

    blocks = block_classes(model, names)
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is emb.weight

    def tie():  # moving a model to the meta device and back gives the LM head its own copy of E
        if tied:
            head.weight = emb.weight

    from_rank0 = _any(any(p.is_meta for p in model.parameters()), device)
    if from_rank0:
        rank0 = dist.get_rank() == 0
        full = model.state_dict() if rank0 else {}
        # buffers (rotary frequencies) are not in the broadcast state: process 0's, sent to all
        sent = [{k: v.clone() for k, v in model.named_buffers()} if rank0 else None]
        dist.broadcast_object_list(sent, src=0)
        buffers = sent[0]
        model = model.to(torch.device("meta"))
        tie()
    else:
        model.to(device)
    for module in [m for m in model.modules() if type(m).__name__ in blocks]:
        fully_shard(module, reshard_after_forward=reshard_after_forward)
    fully_shard(model, ignored_params=set(replicated(model)))
    if from_rank0:
        model.to_empty(device=device)
        tie()
        set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        for name, value in buffers.items():
            owner, _, attr = name.rpartition(".")
            getattr(model.get_submodule(owner) if owner else model, attr).copy_(value.to(device))
    return model


def reshard(model) -> None:
    """Every FSDP unit of `model` back to its shards."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def _any(flag: bool, device) -> bool:
    """Whether `flag` holds on any process (the tensor on `device`: NCCL reduces GPU tensors only)."""
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def local_parameter_bytes(model) -> int:
    """Bytes of parameters this process holds (its shards under FSDP)."""
    total = 0
    for p in model.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        total += local.numel() * local.element_size()
    return total


# ---- sharded checkpoints (fsdp_state_dict_type: SHARDED_STATE_DICT) ----------------------------------------------

SHARDED_CHECKPOINT = "checkpoint"  # a folder: latest.json names its newest complete step-NNNNNN/ (one per save)


def sharded_checkpoints_wanted() -> bool:
    """The accelerate config asks for sharded checkpoints (FSDP2's default state_dict_type)."""
    return fsdp_requested() and plugin().state_dict_type.name == "SHARDED_STATE_DICT"


def latest_sharded(out) -> Path | None:
    """The newest complete sharded checkpoint under the run folder `out`, or None when there is none."""
    pointer = Path(out) / SHARDED_CHECKPOINT / "latest.json"
    if not pointer.exists():
        return None
    try:
        folder = pointer.parent / json.loads(pointer.read_text())["folder"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{pointer} is damaged; delete {pointer.parent} to start over, or point output_dir "
                         "elsewhere") from None
    if not (folder / ".metadata").exists() or not (folder / "state.pt").exists():
        raise ValueError(f"{pointer} names {folder.name}, which is incomplete; delete {pointer.parent} to start "
                         "over, or point output_dir elsewhere")
    return folder


def save_sharded(out, model, optimizer, state: dict, *, main: bool, barrier) -> None:
    """Every process writes its own shards of the model and optimizer (torch.distributed.checkpoint: nothing is
    gathered), into a new step-NNNNNN/ folder; then the main process writes `state` (step, scheduler, RNG, ...)
    beside them and points latest.json at the folder, so a kill at any moment leaves the previous checkpoint
    whole. Every process must call it."""
    import shutil

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    from softviz.files import atomic_file, make_folder

    root = Path(out) / SHARDED_CHECKPOINT
    folder = root / f"step-{state['step']:06d}"
    if main:
        shutil.rmtree(folder, ignore_errors=True)  # left by a save that was killed
        make_folder(root)
    barrier()
    optim = get_optimizer_state_dict(model, optimizer)  # keyed by parameter name
    with _one_process_is_fine():
        dcp.save({"model": get_model_state_dict(model), "optimizer": optim["state"]}, checkpoint_id=folder)
    if main:  # the groups (hyperparameters and names) beside: DCP would match them by position, and FSDP's differ
        with atomic_file(folder / "state.pt") as tmp:
            torch.save({**state, "param_groups": optim["param_groups"]}, tmp)
        with atomic_file(root / "latest.json") as tmp:
            Path(tmp).write_text(json.dumps({"step": state["step"], "folder": folder.name}) + "\n")
        for old in root.glob("step-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
    barrier()


@contextlib.contextmanager
def _one_process_is_fine():
    """Silence torch's warning that it reads or writes a sharded checkpoint in a single process: resuming on one
    process is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def read_sharded_state(folder) -> dict:
    """The main process's part of a sharded checkpoint (step, best, σ, config, scheduler, RNG)."""
    try:
        return torch.load(Path(folder) / "state.pt", map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"cannot read {Path(folder) / 'state.pt'} ({err.__class__.__name__}); delete "
                         f"{Path(folder).parent} to start over, or point output_dir elsewhere") from None


def sharded_shapes(folder) -> dict[str, tuple]:
    """The model's parameter names and whole shapes as a sharded checkpoint stored them."""
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(folder)).read_metadata().state_dict_metadata
    return {k[len("model."):]: tuple(v.size) for k, v in meta.items() if k.startswith("model.") and hasattr(v, "size")}


def load_sharded(folder, model, optimizer, param_groups: list) -> dict:
    """Load a sharded checkpoint's model into `model`, resharded to this run's process count (or whole on one
    process), and return its optimizer state keyed by parameter name, each tensor cut like its parameter, with
    the saved `param_groups` (for checkpoint.load_named_optimizer_state, which matches groups by name: FSDP's
    layout groups the parameters differently from one process's)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                         set_model_state_dict)

    reshard(model)
    sd = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)["state"]}
    with _one_process_is_fine():
        dcp.load(sd, checkpoint_id=str(folder))
    set_model_state_dict(model, sd["model"])
    return {"state": sd["optimizer"], "param_groups": param_groups}
