"""Prompts into a KV cache, shared by the decode loop (softviz.generate) and the teacher-forced RL loss
(softviz.rl.sequence_logprobs): left padding, the distinct prompts of a batch, the cache argument's name."""

from __future__ import annotations

import inspect

import torch


def forward_kwargs(model) -> tuple[str, bool]:
    """(the name `model.forward` takes its cache by: "cache" in transformers 5, else "past_key_values"; whether it
    takes `logits_to_keep`)."""
    params = inspect.signature(model.forward).parameters
    cache_name = "cache" if "cache" in params else "past_key_values"
    return cache_name, "logits_to_keep" in params


def left_pad(row_ids: list[list[int]], pad_id: int, device):
    """Left-padded ids, attention mask and position ids (as transformers' generate computes them)."""
    B, W = len(row_ids), max(map(len, row_ids))
    ids = torch.full((B, W), pad_id, dtype=torch.long)
    mask = torch.zeros((B, W), dtype=torch.long)
    for b, r in enumerate(row_ids):
        ids[b, W - len(r):] = torch.tensor(r)
        mask[b, W - len(r):] = 1
    ids, mask = ids.to(device), mask.to(device)
    return ids, mask, (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)


def distinct_prompts(row_ids, pad_id: int, device):
    """Each distinct prompt of a batch once, left-padded, and the index of each row's prompt among them:
    (ids, mask, position ids of the U distinct prompts, row_to_prompt (B,)). A group's G rows share one prompt,
    so a prefill of the distinct prompts, its cache then indexed by row_to_prompt, costs 1/G of one per row."""
    index: dict[tuple, int] = {}
    row_to_prompt = [index.setdefault(tuple(r), len(index)) for r in row_ids]
    ids, mask, pos = left_pad([list(k) for k in index], pad_id, device)
    return ids, mask, pos, torch.tensor(row_to_prompt, device=device)
