"""The paper's train × inference table (Table 1 with Tables 3-5) for any model and task, resumable.

    base model ──┐
    hard-trained ├─ × {hard, fuzzy, soft} × {greedy pass@1, sample pass@1, sample pass@k} on the test split
    soft-trained │   + per-position CoT entropy profiles (Fig. 4) + the "softer touch" NLL on a held-out family
    fuzzy-trained┘

Every trained model gets the same budget (steps, prompts, group size, lengths); its final weights are
evaluated (MatrixConfig.checkpoint = "best" takes the paper's best greedy-validation checkpoint instead).
Each piece of work (a training run, one model × setting cell) is written to its own file when it finishes,
so an interrupted run resumes where it stopped. The figures of the summary are in softviz.viz.matrix.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

from softviz import checks
from softviz.config import PRESETS, RLConfig
from softviz.files import atomic_file, make_folder

# The paper's six inference settings (greedy = argmax tokens, or σ = 0 at the mode's τ; sample = τ with noise)
SETTINGS = ("hard-greedy", "hard", "fuzzy-greedy", "fuzzy", "soft-greedy", "soft")


@dataclasses.dataclass(frozen=True)
class MatrixConfig:
    """One train × inference experiment. Defaults fit the embedded model on 2 CPU cores (~10 min per seed)."""

    task: str = "arithmetic"
    ood_task: str | None = "arithmetic-puzzle"  # held-out family for the NLL measure (None: skip)
    train_modes: tuple[str, ...] = ("hard", "soft", "fuzzy")
    seeds: tuple[int, ...] = (0, 1)
    steps: int = 200
    # lr per training mode: the paper sweeps lr per model and mode (App. D); these are the rates `softviz methods`
    # chose on validation for the embedded model (results/methods/sweep/)
    learning_rates: tuple[tuple[str, float], ...] = (("hard", 1e-4), ("soft", 5e-5), ("fuzzy", 5e-5))
    prompts_per_step: int = 4
    group_size: int = 8
    max_cot_tokens: int = 64
    max_answer_tokens: int = 16
    eval_every: int = 50
    eval_size: int = 256
    settings: tuple[str, ...] = SETTINGS
    problems: int = 100  # test problems per cell
    samples: int = 32  # samples per problem in sampled settings
    ks: tuple[int, ...] = (1, 8, 32)
    ood_problems: int = 200
    # which weights of a trained run to evaluate: "final" (after `steps`, the same budget for every mode) or
    # "best" (the paper's best greedy-validation checkpoint). With short budgets "best" is often the
    # starting model itself (train() counts step 0), which would hide what training did.
    checkpoint: str = "final"

    def __post_init__(self):
        for s in self.settings:
            if s not in PRESETS:
                raise ValueError(f"MatrixConfig.settings: {s!r} is not a preset; allowed: {', '.join(PRESETS)}")
        lrs = dict(self.learning_rates)
        for m in self.train_modes:
            if m not in lrs:
                raise ValueError(f"MatrixConfig.learning_rates has no entry for train mode {m!r}")
        if not self.seeds:
            raise ValueError("MatrixConfig.seeds is empty: give at least one seed")
        if self.checkpoint not in ("final", "best"):
            raise ValueError(f"MatrixConfig.checkpoint = {self.checkpoint!r} is invalid: allowed 'final' or 'best'")
        from softviz.tasks import TASKS

        for f in ("task", "ood_task"):
            value = getattr(self, f)
            if not (value in TASKS or (f == "ood_task" and value is None)):
                raise ValueError(f"MatrixConfig.{f} = {value!r} is invalid: allowed one of {', '.join(TASKS)}"
                                 + (" or None" if f == "ood_task" else ""))
        for f in ("problems", "samples", "ood_problems"):
            object.__setattr__(self, f, checks.integer(f"MatrixConfig.{f}", getattr(self, f), 1, checks.MAX_ROLLOUTS))
        object.__setattr__(self, "ks", tuple(checks.integer("MatrixConfig.ks[]", k, 1, self.samples,
                                                            why="pass@k needs k <= samples") for k in self.ks))
        for m in self.train_modes:  # RLConfig checks the training fields (steps, sizes, rates, seeds)
            for seed in self.seeds:
                try:
                    self.rl_config(m, seed)
                except ValueError as err:
                    raise ValueError(f"MatrixConfig (training {m}, seed {seed!r}): {err}") from None

    def rl_config(self, mode: str, seed: int) -> RLConfig:
        return RLConfig(mode=mode, task=self.task, steps=self.steps, learning_rate=dict(self.learning_rates)[mode],
                        prompts_per_step=self.prompts_per_step, group_size=self.group_size,
                        max_cot_tokens=self.max_cot_tokens, max_answer_tokens=self.max_answer_tokens,
                        eval_every=self.eval_every, eval_size=self.eval_size, save_every=self.eval_every, seed=seed)

    def models(self) -> list[str]:
        return ["base"] + [f"{m}-seed{s}" for m in self.train_modes for s in self.seeds]


def _write_json(path: Path, data) -> None:
    with atomic_file(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1))


def run_matrix(out_dir: str | os.PathLike, cfg: MatrixConfig = MatrixConfig(), *, model: str | None = None,
               device: str | None = None, log=print) -> dict:
    """Train, evaluate and tabulate; returns the summary (also out_dir/matrix.json and out_dir/table.md).

    Layout: runs/<mode>-seed<s>/ (softviz.train output), cells/<model>__<setting>.json, cells/<model>__nll.json.
    Re-running with the same out_dir and config skips every finished piece.
    """
    from softviz.evaluate import evaluate, solution_nll
    from softviz.models import source_digest
    from softviz.tasks import get_task

    out = make_folder(out_dir)

    spec = {"config": dataclasses.asdict(cfg), "model": model or "embedded", "model_sha256": source_digest(model)}
    if (out / "config.json").exists():  # more seeds may be added to a finished run; nothing else may change
        old = json.loads((out / "config.json").read_text())
        new = json.loads(json.dumps(spec))
        old["config"].pop("seeds"), new["config"].pop("seeds")
        if old != new:
            raise ValueError(f"{out} holds a matrix run with another configuration (only --seeds may change); "
                             "use a new folder or delete it")
    else:
        _write_json(out / "config.json", spec)
    task = get_task(cfg.task)
    t_start = time.time()

    for mode in cfg.train_modes:
        for seed in cfg.seeds:
            train_run(out / "runs" / f"{mode}-seed{seed}", cfg.rl_config(mode, seed), task, model=model, device=device,
                      log=log)

    test = task.examples("test", cfg.problems)
    ood = get_task(cfg.ood_task) if cfg.ood_task else None
    for name in cfg.models():
        todo = [s for s in cfg.settings if not (out / "cells" / f"{name}__{s}.json").exists()]
        nll_file = out / "cells" / f"{name}__nll.json"
        if not todo and (ood is None or nll_file.exists()):
            continue
        policy, tok = _load_trained(out, name, cfg, model, device)
        for setting in todo:
            greedy = setting.endswith("-greedy")
            res = evaluate(policy, tok, task, test, setting, n=1 if greedy else cfg.samples,
                           ks=(1,) if greedy else cfg.ks, max_cot_tokens=cfg.max_cot_tokens,
                           max_answer_tokens=cfg.max_answer_tokens, seed=1234, entropy_profile=True)
            log(f"[matrix] {name} {res.summary()}")
            _write_json(out / "cells" / f"{name}__{setting}.json", dataclasses.asdict(res))
        if ood is not None and not nll_file.exists():
            _write_json(nll_file, solution_nll(policy, tok, ood, ood.examples("test", cfg.ood_problems)))

    summary = summarize(out, cfg)
    summary["wall_seconds_this_call"] = time.time() - t_start
    _write_json(out / "matrix.json", summary)
    with atomic_file(out / "table.md") as tmp:
        Path(tmp).write_text(markdown_table(summary))
    write_figures(out, summary)
    return summary


def train_run(run: Path, rl_cfg: RLConfig, task, *, model: str | None = None, device: str | None = None,
              log=print) -> dict:
    """One resumable training run of an experiment (shared by `softviz matrix` and `softviz methods`): trains the
    starting model into `run` (resuming from its checkpoint) and writes run/done.json when finished; a finished
    run is skipped. Returns done.json's content: seconds, last and best greedy validation."""
    from softviz.models import load_model
    from softviz.train import train

    done = run / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    log(f"[{run.parent.parent.name}] training {rl_cfg.mode} seed {rl_cfg.seed} lr {rl_cfg.learning_rate:g} -> {run}")
    policy, tok = load_model(model, device=device)
    t0, last = time.time(), {}
    for m in train(policy, tok, rl_cfg, output_dir=run, task=task, progress=False):
        last = m if "val/greedy_accuracy" in m else {**last, **{k: v for k, v in m.items() if k == "step"}}
    info = {"seconds": round(time.time() - t0, 1), "last": last.get("val/greedy_accuracy"),
            "best": last.get("val/best_greedy_accuracy")}
    _write_json(done, info)
    return info


def write_figures(out_dir: str | os.PathLike, summary: dict) -> list[Path]:
    """figures/pass_at_k.html and figures/entropy_profiles.html (plus .png where kaleido can render)."""
    from softviz.viz.matrix import matrix_entropy_profiles, matrix_pass_at_k

    out = Path(out_dir) / "figures"
    ks = [k for k in (1, max(summary["config"]["ks"])) if k in summary["config"]["ks"]] or [1]
    figs = {"pass_at_k": matrix_pass_at_k(summary, ks=sorted(set(ks)))}
    if summary["entropy_profiles"]:
        figs["entropy_profiles"] = matrix_entropy_profiles(summary)
    written = []
    for name, fig in figs.items():
        with atomic_file(out / f"{name}.html") as tmp:
            fig.write_html(tmp, include_plotlyjs="cdn")
        written.append(out / f"{name}.html")
        try:
            with atomic_file(out / f"{name}.png") as tmp:
                fig.write_image(tmp, format="png", scale=1)
            written.append(out / f"{name}.png")
        except Exception:  # no Chrome for kaleido: the HTML is the figure
            pass
    return written


def _load_trained(out: Path, name: str, cfg: MatrixConfig, model: str | None, device: str | None):
    """The base model, or a run's final weights (its checkpoint) or its best/ folder."""
    import torch

    from softviz.models import load_model
    from softviz.train import CHECKPOINT

    if name == "base":
        return load_model(model, device=device)
    run = out / "runs" / name
    if cfg.checkpoint == "best":
        return load_model(run / "best", device=device)
    policy, tok = load_model(model, device=device)
    policy.load_state_dict(torch.load(run / CHECKPOINT, map_location="cpu", weights_only=False)["model"])
    return policy.to(next(policy.parameters()).device).eval(), tok


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(out_dir: str | os.PathLike, cfg: MatrixConfig) -> dict:
    """Collect the cell files into {train: {setting: {metric: [mean, std, n_seeds]}}} plus NLL and profiles.

    This dict is the summary format: matrix.json, markdown_table and softviz.viz.matrix's figures read it.
    """
    out = Path(out_dir)
    groups = {"base": ["base"]} | {m: [f"{m}-seed{s}" for s in cfg.seeds] for m in cfg.train_modes}
    table, nll, profiles, cot_lengths = {}, {}, {}, {}
    for train_mode, names in groups.items():
        table[train_mode] = {}
        for setting in cfg.settings:
            cells = [json.loads((out / "cells" / f"{n}__{setting}.json").read_text()) for n in names
                     if (out / "cells" / f"{n}__{setting}.json").exists()]
            if not cells:
                continue
            ks = cells[0]["pass_at"].keys()
            table[train_mode][setting] = {f"pass@{k}": [*_mean_std([c["pass_at"][k] for c in cells]), len(cells)]
                                          for k in ks}
            if setting == "hard":  # Fig. 4 uses hard sampling
                width = min(len(c["entropy_by_position"]) for c in cells)
                profiles[train_mode] = [statistics.fmean(c["entropy_by_position"][t] for c in cells) for t in range(width)]
                cot_lengths[train_mode] = statistics.fmean(c["mean_cot_length"] for c in cells)
        files = [out / "cells" / f"{n}__nll.json" for n in names if (out / "cells" / f"{n}__nll.json").exists()]
        if files:
            vals = [json.loads(f.read_text()) for f in files]
            nll[train_mode] = {k: [*_mean_std([v[k] for v in vals]), len(vals)] for k in ("solution", "answer")}
    runs = {}
    for m in cfg.train_modes:
        for s in cfg.seeds:
            done = out / "runs" / f"{m}-seed{s}" / "done.json"
            if done.exists():
                runs[f"{m}-seed{s}"] = json.loads(done.read_text())
    return {"table": table, "ood_nll": nll, "entropy_profiles": profiles, "mean_cot_length": cot_lengths, "runs": runs,
            "config": dataclasses.asdict(cfg)}


def markdown_table(summary: dict) -> str:
    """Rows: training (base / hard / soft / fuzzy); columns: inference setting × measure, mean ± std over seeds."""
    cfg = summary["config"]
    ks = [k for k in cfg["ks"]]
    head, cols = ["train"], []
    for s in cfg["settings"]:
        for k in ([1] if s.endswith("-greedy") else ks):
            label = f"{s.replace('-greedy', '')} {'G' if s.endswith('-greedy') else f'S@{k}'}"
            head.append(label)
            cols.append((s, f"pass@{k}"))
    has_nll = bool(summary["ood_nll"])
    if has_nll:
        head += ["OOD NLL solution", "OOD NLL answer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for train_mode, row in summary["table"].items():
        cells = [train_mode]
        for s, key in cols:
            v = row.get(s, {}).get(key)
            cells.append("–" if v is None else (f"{100 * v[0]:.1f}" + (f" ± {100 * v[1]:.1f}" if v[2] > 1 else "")))
        if has_nll:
            for key in ("solution", "answer"):
                v = summary["ood_nll"].get(train_mode, {}).get(key)
                cells.append("–" if v is None else f"{v[0]:.3f}" + (f" ± {v[1]:.3f}" if v[2] > 1 else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
