"""Builds the embedded model: a word-level BPE tokenizer and a small Llama trained on the arithmetic task.

Run `python -m softviz.embedded` (or `make embedded-model`): seeded, within an hour on 2 cores, it writes
softviz/assets/embedded/. The training mix is the story family (word problems) and the plain family (typed
questions such as "What is 17 times 3?"), `plain_share` of each batch plain. Three choices shape it:
1. The training traces carry plausible slips: each reasoning step is wrong with probability
   `mistake_rate` (off by 1, 2 or 10), and the chain follows the slip, so a sampled rollout can go astray.
2. Early stop: training ends once greedy accuracy on the validation split is within `story_range` on the
   story family and at least `plain_target` on the plain family, so the model reads typed questions while
   the story family, which RL trains on, stays good but not solved.
3. Noisy inputs: in half of the training sequences the completion's input embeddings get Gaussian noise
   of γ·RMS(E) (γ = `input_noise`), the paper's fuzzy-token noise. Real LLMs shrug that noise off (the
   paper's base Llama-3B: 69% fuzzy-sample vs 71% hard-greedy on GSM8K); a small model trained only on
   clean tokens does not, and soft or fuzzy RL would then start from broken rollouts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import torch

from softviz.models import EMBEDDED_DIR, save_model
from softviz.tasks.arithmetic import ArithmeticTask, corpus


@dataclasses.dataclass(frozen=True)
class EmbeddedConfig:
    seed: int = 0
    hidden_size: int = 256  # 4 layers x 256: ~3M parameters, ~12 MB in fp32 (limit: 20 MB)
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2  # grouped-query attention, as in Llama 3 and Qwen2.5
    intermediate_size: int = 704
    max_positions: int = 512
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 100
    max_steps: int = 4000
    mistake_rate: float = 0.1  # share of reasoning steps with a slip (see module docstring)
    plain_share: float = 0.9  # share of each batch from the plain family (the rest: story); 0.5, 0.7 and 0.85 let
    # the story family overshoot the 75% cap before the plain family reached 60% (docs/results.md)
    story_low: float = 0.3  # early stop once the story family's validation greedy pass@1 is within
    story_high: float = 0.72  # [story_low, story_high]...
    plain_target: float = 0.64  # ...and the plain family's is at least this (both 3 points inside the issue's
    # 75% / 60% test targets: the validation estimate on eval_size problems is within about +-2 points)
    eval_every: int = 50
    eval_size: int = 512
    max_minutes: float = 58.0  # the budget is 60 minutes on 2 cores
    input_noise: float = 0.33  # γ of the noise on completion inputs (module docstring, choice 3)
    noisy_fraction: float = 0.5  # share of sequences that get it


def build_tokenizer():
    """A BPE tokenizer over task text: words as tokens (with a leading '▁' for a space), every digit its own
    token, byte fallback so any text can be encoded. Returns a transformers PreTrainedTokenizerFast."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    # Pieces: an optional '▁' then a word, a single digit, or a single other character.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("▁?[A-Za-z]+|▁?[0-9]|▁?[^▁A-Za-z0-9]|▁"), behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=specials + byte_tokens, min_frequency=2,
                                  initial_alphabet=list("▁0123456789"), show_progress=False)
    texts = corpus() + ["A conversation between User and Assistant. The Assistant reasons step by step and "
                        "ends with the final answer in the format: The final answer is: \\boxed{answer}."]
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>", padding_side="left", model_max_length=512)


def build_model(cfg: EmbeddedConfig, vocab_size: int, pad_id: int, eos_id: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,  # tied like Llama-3.2-3B and Qwen2.5-3B, the paper's small models
        pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=None,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def _batch(tokenizer, examples, task):
    """Right-padded input ids, attention mask and labels (loss on the completion and EOS only)."""
    rows, labels = [], []
    for ex in examples:
        prompt = tokenizer.encode(task.prompt(ex), add_special_tokens=False)
        completion = tokenizer.encode(" " + ex.reasoning, add_special_tokens=False) + [tokenizer.eos_token_id]
        rows.append(prompt + completion)
        labels.append([-100] * len(prompt) + completion)
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    lab = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, l) in enumerate(zip(rows, labels)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(l)] = torch.tensor(l)
        mask[i, : len(r)] = 1
    return ids, mask, lab


def _noisy_inputs(model, ids, labels, cfg: EmbeddedConfig, gen: torch.Generator):
    """Input embeddings with σε (σ = γ·RMS(E)) added at the completion positions of some sequences."""
    emb = model.get_input_embeddings()(ids)  # (B, T, d)
    if cfg.input_noise <= 0 or cfg.noisy_fraction <= 0:
        return emb
    sigma = cfg.input_noise * model.get_input_embeddings().weight.detach().pow(2).mean().sqrt()
    rows = torch.rand(ids.shape[0], generator=gen) < cfg.noisy_fraction  # (B,)
    where = (labels != -100) & rows[:, None]  # (B, T)
    noise = torch.randn(emb.shape, generator=gen) * sigma
    return emb + noise * where[..., None]


def greedy_accuracy(model, tokenizer, task, examples) -> float:
    """Greedy pass@1 with the softviz engine (hard-greedy equals transformers' greedy generate)."""
    from softviz.evaluate import evaluate

    model.eval()
    acc = evaluate(model, tokenizer, task, examples, "hard-greedy", max_cot_tokens=64, max_answer_tokens=16).pass_at[1]
    model.train()
    return acc


def _train_batch(cfg: EmbeddedConfig, step: int, tasks: dict) -> list:
    """Step `step`'s examples: plain_share of the batch from the plain family, the rest from the story family."""
    n_plain = round(cfg.batch_size * cfg.plain_share)
    out = []
    for family, n in (("story", cfg.batch_size - n_plain), ("plain", n_plain)):
        if n:
            out += tasks[family].examples("train", n, seed=cfg.seed, start=(step - 1) * n * 2,
                                          mistake_rate=cfg.mistake_rate)
    return out


def _done(cfg: EmbeddedConfig, acc: dict) -> bool:
    return cfg.story_low <= acc["story"] <= cfg.story_high and acc["plain"] >= cfg.plain_target


def train(cfg: EmbeddedConfig, out_dir: Path = EMBEDDED_DIR, log=print) -> dict:
    torch.manual_seed(cfg.seed)
    tasks = {family: ArithmeticTask(family) for family in ("story", "plain")}
    task = tasks["story"]  # both families share the prompt format
    tokenizer = build_tokenizer()
    model = build_model(cfg, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"vocab {len(tokenizer)}, parameters {n_params / 1e6:.2f}M")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.1, betas=(0.9, 0.95))

    def lr_at(step):  # linear warm-up, then cosine to 10%
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, frac))))

    val = {f: t.examples("validation", cfg.eval_size, seed=cfg.seed) for f, t in tasks.items()}
    gen = torch.Generator().manual_seed(cfg.seed)
    t0, history, acc, step = time.time(), [], {f: 0.0 for f in tasks}, 0
    model.train()
    for step in range(1, cfg.max_steps + 1):
        ids, mask, labels = _batch(tokenizer, _train_batch(cfg, step, tasks), task)
        loss = model(inputs_embeds=_noisy_inputs(model, ids, labels, cfg, gen), attention_mask=mask,
                     labels=labels).loss
        for g in opt.param_groups:
            g["lr"] = lr_at(step - 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        minutes = (time.time() - t0) / 60
        if step % cfg.eval_every == 0 or minutes > cfg.max_minutes or step == cfg.max_steps:
            acc = {f: greedy_accuracy(model, tokenizer, tasks[f], val[f]) for f in tasks}
            history.append({"step": step, "loss": round(loss.item(), 4), "val_greedy_pass@1": acc,
                            "minutes": round(minutes, 2)})
            log(json.dumps(history[-1]))
            if _done(cfg, acc) or minutes > cfg.max_minutes:
                break
    meta = {"config": dataclasses.asdict(cfg), "steps": step, "val_greedy_pass@1": acc, "target_met": _done(cfg, acc),
            "minutes": round((time.time() - t0) / 60, 2), "parameters": n_params, "history": history}
    model.eval()
    save_model(model, tokenizer, out_dir, meta, meta_file="softviz_embedded.json")
    log(f"saved {out_dir} after {step} steps, validation greedy pass@1 {acc}"
        + ("" if meta["target_met"] else " (the early-stop target was NOT met)"))
    return meta


REPORT_FAMILIES = ("story", "plain", "puzzle")


def report(model_dir: Path = EMBEDDED_DIR, problems: int = 500, samples: int = 32, soft_samples: int = 8,
           branch_samples: int = 8, log=print) -> dict:
    """The model's quality table on the test split of every family: greedy pass@1 (plain: also per number of
    operations), hard-sample pass@k over `samples`, soft and fuzzy sampling pass@1 over `soft_samples`, and the
    branch points (analysis.branch_points) of soft rollouts (τ 0.5, γ 0.33) over `branch_samples`."""
    from softviz.analysis import branch_points
    from softviz.config import TraceConfig
    from softviz.evaluate import evaluate
    from softviz.generate import generate
    from softviz.models import load_model, model_digest

    model, tok = load_model(model_dir, device="cpu")
    meta = json.loads((Path(model_dir) / "softviz_embedded.json").read_text())
    out = {"model": {"sha256": model_digest(model_dir), "parameters": meta["parameters"], "steps": meta["steps"],
                     "train_minutes": meta["minutes"], "val_greedy_pass@1": meta["val_greedy_pass@1"]},
           "split": "test", "problems": problems, "families": {}}
    run = dict(max_cot_tokens=64, max_answer_tokens=16)
    for family in REPORT_FAMILIES:
        task = ArithmeticTask(family)
        exs = task.examples("test", problems)
        rows = {}
        greedy = evaluate(model, tok, task, exs, "hard-greedy", **run)
        rows["hard-greedy"] = _row(greedy)
        if family == "plain":
            rows["hard-greedy"]["by_ops"] = {
                str(k): {"problems": len(cs), "pass@1": sum(cs) / len(cs) if cs else None}
                for k in (1, 2, 3) for cs in [[c for c, e in zip(greedy.correct, exs) if e.meta["ops"] == k]]}
        ks = [k for k in (1, 8, 32) if k <= samples]
        rows["hard"] = _row(evaluate(model, tok, task, exs, "hard", n=samples, ks=ks, **run))
        rows["fuzzy"] = _row(evaluate(model, tok, task, exs, "fuzzy", n=soft_samples, **run))
        rows["soft"] = _row(evaluate(model, tok, task, exs, "soft", n=soft_samples, **run))
        steps = uncertain = blended = 0
        for start in range(0, problems, 32):
            chunk = exs[start : start + 32]
            r = generate(model, tok, [task.prompt(e) for e in chunk], "soft", n=branch_samples, seed=start,
                         answer_cue=task.answer_cue, trace=TraceConfig(top_k=1, nearest_k=0), **run)
            bp = branch_points(r.trace)
            steps, uncertain, blended = steps + bp["steps"], uncertain + bp["uncertain"].sum(), blended + bp["blended"].sum()
        rows["branch_points"] = {"mode": "soft (τ 0.5, γ 0.33)", "problems": problems, "samples": branch_samples,
                                 "steps": steps, "frac_entropy_above_0.672": round(float(uncertain) / steps, 4),
                                 "frac_top_weight_below_0.9": round(float(blended) / steps, 4)}
        out["families"][family] = rows
        log(f"{family}: " + json.dumps({m: r.get("pass_at", r) for m, r in rows.items()}))
    return out


def _row(r) -> dict:
    return {"n": r.samples, "pass_at": {str(k): round(v, 4) for k, v in r.pass_at.items()},
            "boxed_rate": round(r.boxed_rate, 4), "mean_cot_length": round(r.mean_cot_length, 2),
            "seconds": round(r.seconds, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(EmbeddedConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    parser.add_argument("--out", type=Path, default=EMBEDDED_DIR)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--report", type=Path, default=None, metavar="JSON",
                        help="measure the model in --out on every family's test split into JSON (no training)")
    args = vars(parser.parse_args(argv))
    out, threads, report_path = args.pop("out"), args.pop("threads"), args.pop("report")
    if threads:
        torch.set_num_threads(threads)
    if report_path is None:
        train(EmbeddedConfig(**args), out)
        return
    from softviz.files import atomic_file

    table = report(out)
    with atomic_file(report_path) as tmp:
        Path(tmp).write_text(json.dumps(table, indent=2) + "\n")
    print(f"wrote {report_path}")


if __name__ == "__main__":
    main()
