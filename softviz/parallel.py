"""Several processes under `accelerate launch` (or torchrun): data parallelism, or FSDP (softviz.sharding),
and the launch settings softviz refuses rather than ignores."""

from __future__ import annotations

import contextlib
import gc
import os
import sys

import torch

from softviz import sharding
from softviz.checkpoint import load_named_optimizer_state
from softviz.generate import lock_step


def check_mixed_precision(asked: str, cuda: bool) -> None:
    """softviz does not autocast: it loads the weights in bf16 on GPUs and fp32 on CPUs and computes p·E, σ and
    the densities in fp32 itself. An accelerate config asking for anything else is refused rather than ignored."""
    if asked == "no" or (asked == "bf16" and cuda):
        return
    raise ValueError(f"mixed_precision = {asked} in the accelerate config: softviz does not autocast; it loads the "
                     "weights in bf16 on GPUs and fp32 on CPUs and computes the mixture, σ and the densities in fp32 "
                     "itself. Set mixed_precision: 'no' (or pass --mixed_precision no to accelerate launch)")


def check_launch() -> None:
    """Refuse the `accelerate launch` settings softviz would otherwise ignore (mixed precision; FSDP wrapping,
    offload, activation checkpointing): the CLI calls it before the model loads, Parallel again."""
    check_mixed_precision(os.environ.get("ACCELERATE_MIXED_PRECISION", "no"), torch.cuda.is_available())
    if sharding.fsdp_requested():
        sharding.plugin()


def join_group() -> None:
    """Start of a process under `accelerate launch`, before the model loads: refuse the settings softviz would
    ignore, and meet the other processes (under FSDP's RAM-efficient loading only the first reads the weights)."""
    from accelerate import PartialState

    check_launch()
    PartialState(cpu=not torch.cuda.is_available())


def leave_group_and_exit() -> None:
    """End of a process under `accelerate launch`, once everything is written. The processes leave the group
    together (a process that exits with the group still up can abort in gloo's threads: "terminate called without
    an active exception"), collective handles left in reference cycles are released while the group is still up,
    and the process ends here rather than in interpreter shutdown, where gloo's threads, still referenced after a
    torch.distributed.checkpoint save, aborted about 1 exit in 20 on a loaded CPU."""
    from accelerate import PartialState

    gc.collect()
    PartialState().wait_for_everyone()
    PartialState().destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class Parallel:
    """Data parallelism across the processes that `accelerate launch` (or torchrun) starts.

    Each process rolls out a contiguous share of the step's prompts × group_size rollouts (samples, not only
    prompts, are split: any process count that divides the rollouts works; each rollout's seed is its prompt's
    and sample's, so the union equals a one-process step). Rewards are gathered, so a group's RLOO/GRPO baseline
    is over the whole group wherever its samples ran; gradients and metrics are averaged with accelerate's
    collectives; only the main process writes files. With one process it does nothing.
    """

    def __init__(self):
        self.acc, self.rank, self.world, self.fsdp, self.sharded_checkpoints = None, 0, 1, False, False
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            check_launch()
            from accelerate import Accelerator

            self.acc = Accelerator(cpu=not torch.cuda.is_available())
            self.rank, self.world = self.acc.process_index, self.acc.num_processes
            self.fsdp = sharding.fsdp_requested()
            self.sharded_checkpoints = sharding.sharded_checkpoints_wanted()

    def prepare(self, model):
        """FSDP: shard the model, and so its gradients and the optimizer's state built from it (softviz.sharding,
        as the accelerate config says); other layouts keep it whole. Then one forward of one token on every
        process, so that FSDP knows its root before softviz calls the blocks and the embedding directly."""
        if not self.fsdp:
            return model
        p = sharding.plugin()
        model = sharding.shard(model, self.acc.device, reshard_after_forward=p.reshard_after_forward is not False,
                               names=p.transformer_cls_names_to_wrap)
        with torch.no_grad():
            model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=self.acc.device))
        self.reshard(model)
        return model

    def reshard(self, model) -> None:
        """FSDP: every unit back to its shards (a unit kept gathered after its forward, or gathered for E,
        would otherwise hand the optimizer whole tensors)."""
        if self.fsdp:
            sharding.reshard(model)

    def lock_step(self):
        """The context rollouts run in: under FSDP every process steps until no process has a running row."""
        return lock_step(self.any_running) if self.fsdp else contextlib.nullcontext()

    def any_running(self, running: bool) -> bool:
        """Whether any process still has a running rollout (FSDP's lock-step rollouts; see generate.lock_step)."""
        flag = torch.tensor([1.0 if running else 0.0], device=self.acc.device)
        return bool(self.acc.reduce(flag, reduction="sum").item() > 0)

    def full_state(self, model, optimizer=None) -> tuple[dict, dict | None]:
        """The whole model's (and the optimizer's) state on the main process, gathered from the shards (a
        collective: every process calls it; the others get empty dicts). Optimizer state is keyed by parameter
        name, so a run resumes under any number of processes."""
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd = get_model_state_dict(model, options=opts)
        return model_sd, (get_optimizer_state_dict(model, optimizer, options=opts) if optimizer is not None else None)

    def load_full_state(self, model, optimizer, model_sd: dict, optim_sd: dict) -> None:
        """Shard whole states (every process holds them) into the model and the optimizer."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        self.reshard(model)  # into the shards themselves (a unit gathered for E would take the values and drop them)
        set_model_state_dict(model, model_sd, options=StateDictOptions(full_state_dict=True))
        load_named_optimizer_state(model, optimizer, optim_sd)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int, what: str) -> slice:
        if n % self.world:
            raise ValueError(f"{what} = {n} must be divisible by the number of processes ({self.world})")
        size = n // self.world
        return slice(self.rank * size, (self.rank + 1) * size)

    def rows(self, prompts: int, group: int) -> tuple[slice, slice]:
        """(this process's rows of the step's prompts × group rollouts, the prompts they belong to)."""
        if (prompts * group) % self.world:
            raise ValueError(f"RLConfig.prompts_per_step x group_size = {prompts} x {group} = {prompts * group} "
                             f"rollouts must be divisible by the number of processes ({self.world})")
        rows = self.shard(prompts * group, "prompts_per_step x group_size")
        return rows, slice(rows.start // group, -(-rows.stop // group))

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Every process's `t` (same shape), concatenated in process order."""
        if self.world == 1:
            return t
        return self.acc.gather(t.to(self.acc.device)).cpu()

    def mean_grads(self, params) -> None:
        """All-reduce the gradients of `params` to their mean (one flat collective). Under FSDP, pass only the
        replicated parameters: FSDP reduce-scatters the sharded ones itself."""
        if self.world == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = self.acc.reduce(torch.cat([g.flatten() for g in grads]), reduction="mean")
        for g, new in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(new.view_as(g))

    def mean(self, metrics: dict) -> dict:
        if self.world == 1:
            return metrics
        keys = [k for k, v in metrics.items() if isinstance(v, float)]
        values = self.acc.reduce(torch.tensor([metrics[k] for k in keys], device=self.acc.device), reduction="mean")
        return {**metrics, **dict(zip(keys, values.tolist()))}

    def clip_grad_norm(self, params, max_norm: float) -> float:
        """Scale the gradients to a total norm of at most `max_norm`; returns the norm before. Under FSDP the
        sharded gradients' squares are summed across processes, the replicated ones (equal everywhere) counted
        once."""
        params = list(params)
        if not self.fsdp:
            return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        grads = [p.grad for p in params if p.grad is not None]
        sharded = [g.to_local() for g in grads if hasattr(g, "to_local")]
        whole = [g for g in grads if not hasattr(g, "to_local")]
        def squares(gs):
            return torch.stack([g.double().pow(2).sum().cpu() for g in gs]).sum() if gs else torch.zeros((), dtype=torch.float64)

        sq = self.acc.reduce(squares(sharded).to(self.acc.device), reduction="sum").cpu() + squares(whole)
        total = float(sq.sqrt())
        scale = max_norm / (total + 1e-6)
        if scale < 1:
            for g in sharded + whole:
                g.mul_(scale)
        return total

    def barrier(self) -> None:
        if self.acc is not None:
            self.acc.wait_for_everyone()
