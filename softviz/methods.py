"""Soft-token RL methods side by side: which ones learn, measured on one budget, resumable.

    for every trainable method (hard, soft, fuzzy, soft-grpo, multiplex):
      1. gradient signal of one step on the starting model (rl.gradient_snr, as benchmarks/rl_signal.py)
      2. learning rate chosen on validation: a short run per rate of `lr_grid`, highest final validation wins
      3. `seeds` runs of `steps` steps at that rate, greedy validation (hard greedy for every method) every
         `eval_every` steps: the learning curves
      4. each trained model under hard inference on the test split: pass@1 and pass@k over `samples`, and the
         mean CoT entropy (the starting model is measured the same way: "before")

Every piece is its own file, written when it finishes (runs/<method>-seed<s>/done.json, cells/<name>.json,
snr/<method>.json, sweep/<method>-lr<lr>/done.json), so the command resumes where it stopped and seeds can be
added later; methods.json, table.md and figures/ are rebuilt from whatever is finished. Shares its training
runner with `softviz matrix` (softviz.matrix.train_run).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

from softviz import checks
from softviz.config import PRESETS, RLConfig
from softviz.files import atomic_file, make_folder
from softviz.matrix import _write_json, train_run

METHODS = ("hard", "soft", "fuzzy", "soft-grpo", "multiplex")


@dataclasses.dataclass(frozen=True)
class MethodsConfig:
    """One methods comparison. Defaults fit the embedded model on 2 CPU cores (a run with its evaluation in
    well under 15 minutes)."""

    task: str = "arithmetic"
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 300  # hard RLOO gains ~1 point in 50 steps here and ~13 in 850: 300 fits 15 minutes
    prompts_per_step: int = 4
    group_size: int = 8
    max_cot_tokens: int = 64
    max_answer_tokens: int = 16
    eval_every: int = 50
    eval_size: int = 256
    validation: str = "hard-greedy"  # one measure for every method
    # learning rates tried per method (a short run each, seed `sweep_seed`); the best final validation wins
    lr_grid: tuple[tuple[str, tuple[float, ...]], ...] = (
        ("hard", (5e-5, 1e-4, 2e-4)), ("soft", (1e-5, 2e-5, 5e-5)), ("fuzzy", (1e-5, 2e-5, 5e-5)),
        ("soft-grpo", (5e-5, 1e-4, 2e-4)), ("multiplex", (5e-5, 1e-4, 2e-4)))
    sweep_steps: int = 60
    sweep_seed: int = 100  # not one of `seeds`: the rate is chosen on runs the comparison does not reuse
    problems: int = 200  # test problems per trained model
    samples: int = 32
    ks: tuple[int, ...] = (1, 32)
    snr_estimates: int = 16  # one-step gradient estimates on a fixed batch of `snr_prompts` x group_size
    snr_prompts: int = 8

    def __post_init__(self):
        from softviz.tasks import TASKS

        if self.task not in TASKS:
            raise ValueError(f"MethodsConfig.task = {self.task!r} is invalid: allowed one of {', '.join(TASKS)}")
        if not self.methods or not self.seeds:
            raise ValueError("MethodsConfig needs at least one method and one seed")
        grid = dict(self.lr_grid)
        for m in self.methods:
            if m not in PRESETS:
                raise ValueError(f"MethodsConfig.methods: {m!r} is not a preset; allowed: {', '.join(PRESETS)}")
            if not grid.get(m):
                raise ValueError(f"MethodsConfig.lr_grid has no learning rates for {m!r}")
        if self.sweep_seed in self.seeds:
            raise ValueError(f"MethodsConfig.sweep_seed = {self.sweep_seed} is one of the seeds {self.seeds}: the "
                             "learning rate must be chosen on runs that are not reported")
        for f in ("problems", "samples", "snr_estimates", "snr_prompts", "sweep_steps"):
            object.__setattr__(self, f, checks.integer(f"MethodsConfig.{f}", getattr(self, f), 1, checks.MAX_ROLLOUTS))
        object.__setattr__(self, "ks", tuple(checks.integer("MethodsConfig.ks[]", k, 1, self.samples,
                                                            why="pass@k needs k <= samples") for k in self.ks))
        from softviz.config import Mode
        from softviz.rl import check_trainable

        for m in self.methods:
            check_trainable(Mode.preset(m))
        for m in self.methods:  # RLConfig checks sizes and rates
            for lr in grid[m]:
                try:
                    self.rl_config(m, self.sweep_seed, lr, sweep=True)
                except ValueError as err:
                    raise ValueError(f"MethodsConfig ({m}, lr {lr}): {err}") from None

    def rl_config(self, method: str, seed: int, lr: float, sweep: bool = False) -> RLConfig:
        steps = self.sweep_steps if sweep else self.steps
        every = max(1, min(self.eval_every, steps))
        return RLConfig(mode=method, task=self.task, steps=steps, learning_rate=lr,
                        prompts_per_step=self.prompts_per_step, group_size=self.group_size,
                        max_cot_tokens=self.max_cot_tokens, max_answer_tokens=self.max_answer_tokens,
                        eval_every=every, eval_size=self.eval_size, save_every=every, seed=seed,
                        validation_mode=self.validation)


def iter_gradient_estimates(model, tok, task, cfg: RLConfig, K: int, fixed: bool = True, seed: int = 1000):
    """Yield K flattened one-step policy-gradient estimates of cfg's method from independent rollouts, each with
    its rollout accuracy. `fixed`: the same prompts every time (signal vs noise of one batch); otherwise new
    prompts each time. Leaves the gradients cleared and the model in eval mode."""
    from softviz.generate import embedding_matrix
    from softviz.mixing import noise_std
    from softviz.train import rl_backward, rollout_rewards

    mode = cfg.rollout_mode
    sigma = noise_std(embedding_matrix(model).detach(), mode.noise_scale) if mode.policy.uses_noise else None
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        for k in range(K):
            examples = task.examples("train", cfg.prompts_per_step, seed=0,
                                     start=0 if fixed else k * cfg.prompts_per_step)
            r, rewards, adv, golds = rollout_rewards(model, tok, cfg, task, examples, mode, seed=seed + k, sigma=sigma)
            model.zero_grad(set_to_none=False)
            rl_backward(model, cfg, r, adv)
            yield (torch.cat([p.grad.flatten() for p in params]),
                   statistics.fmean(task.is_correct(a, g) for a, g in zip(r.answers, golds)))
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def gradient_estimates(model, tok, task, cfg: RLConfig, K: int, fixed: bool = True, seed: int = 1000):
    """The K estimates of `iter_gradient_estimates` stacked (K, P), and the mean rollout accuracy."""
    out, acc = zip(*iter_gradient_estimates(model, tok, task, cfg, K, fixed=fixed, seed=seed))
    return torch.stack(out), sum(acc) / K


def run_methods(out_dir: str | os.PathLike, cfg: MethodsConfig = MethodsConfig(), *, model: str | None = None,
                device: str | None = None, log=print) -> dict:
    """Run (or resume) the comparison into out_dir; returns the summary (also methods.json and table.md)."""
    from softviz.models import load_model, source_digest
    from softviz.rl import gradient_snr
    from softviz.tasks import get_task

    out = make_folder(out_dir)
    spec = {"config": dataclasses.asdict(cfg), "model": model or "embedded", "model_sha256": source_digest(model)}
    if (out / "config.json").exists():  # seeds may be added; nothing else may change
        old, new = json.loads((out / "config.json").read_text()), json.loads(json.dumps(spec))
        old["config"].pop("seeds"), new["config"].pop("seeds")
        if old != new:
            raise ValueError(f"{out} holds a methods run with another configuration (only --seeds may change); use a "
                             "new folder or delete it")
    _write_json(out / "config.json", spec)
    task = get_task(cfg.task)
    t_start = time.time()

    # 1. gradient signal of each method on the starting model, and the starting model under hard inference
    for method in cfg.methods:
        path = out / "snr" / f"{method}.json"
        if not path.exists():
            base, tok = load_model(model, device=device)
            torch.manual_seed(0)
            rl_cfg = dataclasses.replace(cfg.rl_config(method, 0, 1e-4), prompts_per_step=cfg.snr_prompts)
            t0 = time.time()
            grads, acc = gradient_estimates(base, tok, task, rl_cfg, cfg.snr_estimates)
            _write_json(path, {**gradient_snr(grads), "rollout_accuracy": acc, "seconds": round(time.time() - t0, 1),
                               "batch": f"{cfg.snr_prompts} fixed prompts x {cfg.group_size} rollouts"})
            log(f"[methods] gradient signal {method}: {json.loads(path.read_text())['snr']:.4f}")
    _evaluate_cell(out, "base", None, cfg, task, model, device, log)

    # 2. learning rate per method, chosen on validation
    chosen = {}
    for method in cfg.methods:
        finals = {}
        for lr in dict(cfg.lr_grid)[method]:
            run = out / "sweep" / f"{method}-lr{lr:g}"
            train_run(run, cfg.rl_config(method, cfg.sweep_seed, lr, sweep=True), task, model=model, device=device,
                      log=log)
            finals[lr] = _final_validation(run)
            _drop_weights(run)
        chosen[method] = max(finals, key=lambda lr: (finals[lr], -lr))  # ties: the smaller rate
        log(f"[methods] {method}: lr {chosen[method]:g} (final validation {finals})")

    # 3-4. the comparison runs, seed by seed (each seed of every method is complete before the next starts)
    for seed in cfg.seeds:
        for method in cfg.methods:
            name = f"{method}-seed{seed}"
            run = out / "runs" / name
            train_run(run, cfg.rl_config(method, seed, chosen[method]), task, model=model, device=device, log=log)
            _evaluate_cell(out, name, run, cfg, task, model, device, log)
            _drop_weights(run)
            _publish(out, cfg, chosen)
    summary = _publish(out, cfg, chosen)
    summary["wall_seconds_this_call"] = round(time.time() - t_start, 1)
    return summary


def _final_validation(run: Path) -> float:
    """Mean of the last two greedy validations of a run (one is noisy at a few hundred problems)."""
    vals = [m["val/greedy_accuracy"] for m in _metrics(run) if "val/greedy_accuracy" in m]
    return statistics.fmean(vals[-2:])


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _drop_weights(run: Path) -> None:
    """A finished run keeps its metrics and done.json; its weights (checkpoint, best/, final/) were evaluated
    already and would only fill the disk."""
    import shutil

    if not (run / "done.json").exists():
        return
    (run / "checkpoint.pt").unlink(missing_ok=True)
    for sub in ("best", "final"):
        shutil.rmtree(run / sub, ignore_errors=True)


def _evaluate_cell(out: Path, name: str, run: Path | None, cfg: MethodsConfig, task, model, device, log) -> None:
    """Hard-sampling pass@k and CoT entropy of the starting model (run None) or a run's final weights."""
    from softviz.evaluate import evaluate
    from softviz.models import load_model
    from softviz.train import FINAL

    path = out / "cells" / f"{name}.json"
    if path.exists():
        return
    policy, tok = load_model(model if run is None else run / FINAL, device=device)
    res = evaluate(policy, tok, task, task.examples("test", cfg.problems), "hard", n=cfg.samples, ks=cfg.ks,
                   max_cot_tokens=cfg.max_cot_tokens, max_answer_tokens=cfg.max_answer_tokens, seed=4321,
                   entropy_profile=True)
    log(f"[methods] {name}: {res.summary()}")
    _write_json(path, dataclasses.asdict(res))


def _interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval over seeds (0 with one seed)."""
    from softviz.stats import t_quantile

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, t_quantile(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def summarize(out_dir: str | os.PathLike, cfg: MethodsConfig, chosen: dict[str, float] | None = None) -> dict:
    """Collect the finished pieces: per method its learning rate, gradient signal, learning curve (mean and 95%
    band over the finished seeds), test pass@k and CoT entropy before and after training."""
    out = Path(out_dir)
    base = json.loads((out / "cells" / "base.json").read_text()) if (out / "cells" / "base.json").exists() else None
    methods = {}
    for method in cfg.methods:
        entry = {"learning_rate": (chosen or {}).get(method)}
        snr = out / "snr" / f"{method}.json"
        if snr.exists():
            entry["gradient_signal"] = json.loads(snr.read_text())
        sweep = {}
        for lr in dict(cfg.lr_grid)[method]:
            run = out / "sweep" / f"{method}-lr{lr:g}"
            if (run / "done.json").exists():
                sweep[f"{lr:g}"] = _final_validation(run)
        entry["lr_sweep_final_validation"] = sweep
        seeds = [s for s in cfg.seeds if (out / "cells" / f"{method}-seed{s}.json").exists()]
        entry["seeds"] = seeds
        if seeds:
            curves = [{m["step"]: m["val/greedy_accuracy"] for m in _metrics(out / "runs" / f"{method}-seed{s}")
                       if "val/greedy_accuracy" in m} for s in seeds]
            steps = sorted(set.intersection(*(set(c) for c in curves)))
            entry["curve"] = {"step": steps, "mean_ci": [_interval([c[t] for c in curves]) for t in steps]}
            # each seed validates on its own problems, so its starting accuracy differs: the gain over a run's own
            # step 0 removes that offset from the seed-to-seed spread
            entry["gain_curve"] = {"step": steps, "mean_ci": [_interval([c[t] - c[steps[0]] for c in curves])
                                                              for t in steps]}
            gains = [c[steps[-1]] - c[0] for c in curves]
            entry["validation_gain"] = _interval(gains)
            cells = [json.loads((out / "cells" / f"{method}-seed{s}.json").read_text()) for s in seeds]
            entry["test"] = {f"pass@{k}": _interval([c["pass_at"][str(k)] if str(k) in c["pass_at"] else
                                                     c["pass_at"][k] for c in cells]) for k in cfg.ks}
            entry["cot_entropy_after"] = _interval([c["mean_cot_entropy"] for c in cells])
            entry["seconds_per_run"] = statistics.fmean(
                json.loads((out / "runs" / f"{method}-seed{s}" / "done.json").read_text())["seconds"] for s in seeds)
        methods[method] = entry
    before = None
    if base:
        before = {**{f"pass@{k}": base["pass_at"][str(k)] if str(k) in base["pass_at"] else base["pass_at"][k]
                     for k in cfg.ks}, "cot_entropy": base["mean_cot_entropy"]}
    return {"config": dataclasses.asdict(cfg), "before": before, "methods": methods}


def markdown_table(summary: dict) -> str:
    """One row per method: rate, gradient signal, validation gain, test pass@k and CoT entropy after training."""
    cfg, before = summary["config"], summary["before"]
    ks = cfg["ks"]

    def pct(v):
        return "–" if v is None else f"{100 * v[0]:.1f} ± {100 * v[1]:.1f}" if v[1] else f"{100 * v[0]:.1f}"

    head = ["method", "lr", "seeds", "gradient signal", "validation gain (points)"] + \
           [f"test pass@{k}" for k in ks] + ["CoT entropy (nats)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if before:
        lines.append("| starting model | – | – | – | – | " + " | ".join(f"{100 * before[f'pass@{k}']:.1f}" for k in ks)
                     + f" | {before['cot_entropy']:.3f} |")
    for method, e in summary["methods"].items():
        snr = e.get("gradient_signal", {}).get("snr")
        H = e.get("cot_entropy_after")
        lines.append("| " + " | ".join([
            method, "–" if e["learning_rate"] is None else f"{e['learning_rate']:g}", str(len(e["seeds"])),
            "–" if snr is None else f"{snr:.3f}", pct(e.get("validation_gain")),
            *[pct(e.get("test", {}).get(f"pass@{k}")) for k in ks],
            "–" if H is None else f"{H[0]:.3f}" + (f" ± {H[1]:.3f}" if H[1] else "")]) + " |")
    return "\n".join(lines) + "\n"


def _publish(out: Path, cfg: MethodsConfig, chosen: dict) -> dict:
    """methods.json, table.md and figures/learning_{curves,gains}.{html,png} from what is finished."""
    from softviz.viz.training import method_curves

    summary = summarize(out, cfg, chosen)
    _write_json(out / "methods.json", summary)
    with atomic_file(out / "table.md") as tmp:
        Path(tmp).write_text(markdown_table(summary))
    for name, gain in (("learning_curves", False), ("learning_gains", True)):
        if not any(e.get("gain_curve" if gain else "curve") for e in summary["methods"].values()):
            continue
        fig = method_curves(summary, gain=gain)
        with atomic_file(out / "figures" / f"{name}.html") as tmp:
            fig.write_html(tmp, include_plotlyjs="cdn")
        try:
            with atomic_file(out / "figures" / f"{name}.png") as tmp:
                fig.write_image(tmp, format="png", scale=1)
        except Exception:  # no Chrome for kaleido: the HTML is the figure
            pass
    return summary
