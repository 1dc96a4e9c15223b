"""train(): smoke runs per mode, exact resume, validation and traces, bad configuration."""

import json
import math

import pytest
import torch

from softviz import Trace, load_model
from softviz.config import RLConfig
from softviz.tasks import ArithmeticTask
from softviz.train import CHECKPOINT, train

SMALL = dict(prompts_per_step=2, group_size=2, max_cot_tokens=32, max_answer_tokens=8, eval_every=0, save_every=1)


def fresh():
    return load_model(device="cpu")


@pytest.mark.parametrize("mode", ["hard", "soft", "fuzzy", "soft-grpo"])
def test_two_step_smoke_run_changes_every_parameter(mode, tmp_path):
    model, tok = fresh()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = RLConfig(mode=mode, steps=2, learning_rate=1e-3, warmup_steps=0,
                   **{**SMALL, "prompts_per_step": 3, "group_size": 8})
    ms = list(train(model, tok, cfg, output_dir=tmp_path, progress=False))
    assert min(m["frac_reward_zero_std"] for m in ms) < 1  # some group has a learning signal
    assert [m["step"] for m in ms] == [1, 2]
    for m in ms:
        assert math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]) and 0 <= m["reward"] <= 100
        assert {"reward_std", "frac_reward_zero_std", "entropy", "cot/mean_length", "step_time"} <= m.keys()
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, f"parameters not updated: {unchanged}"
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [1, 2]


def test_resume_gives_the_same_next_step(tmp_path):
    cfg = RLConfig(mode="soft", steps=3, learning_rate=5e-4, warmup_steps=1, **SMALL)
    model, tok = fresh()
    full = list(train(model, tok, cfg, output_dir=tmp_path / "a", progress=False))
    # interrupted after two steps (the checkpoint of step 2 is on disk), then resumed with a fresh model
    model_b, tok = fresh()
    gen = train(model_b, tok, cfg, output_dir=tmp_path / "b", progress=False)
    first_two = [next(gen), next(gen)]
    gen.close()
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)["step"] == 2
    model_c, tok = fresh()
    rest = list(train(model_c, tok, cfg, output_dir=tmp_path / "b", progress=False))
    assert [m["step"] for m in rest] == [3]
    for key in ["reward", "loss", "grad_norm", "learning_rate", "entropy"]:
        assert rest[0][key] == pytest.approx(full[2][key], rel=1e-5, abs=1e-6), key
    for (n, p), q in zip(model.named_parameters(), model_c.parameters()):
        assert torch.allclose(p, q, atol=1e-6), n
    assert first_two[1]["loss"] == pytest.approx(full[1]["loss"], rel=1e-5)


def test_validation_keeps_the_best_model_and_traces_are_saved(tmp_path):
    cfg = RLConfig(mode="fuzzy", steps=2, learning_rate=1e-4, eval_size=8, trace_steps=(2,),
                   **{**SMALL, "eval_every": 1})
    model, tok = fresh()
    ms = list(train(model, tok, cfg, output_dir=tmp_path, progress=False))
    assert [m["step"] for m in ms] == [0, 1, 2] and set(ms[0]) == {"step", "val/greedy_accuracy",
                                                                  "val/best_greedy_accuracy"}
    assert all(0 <= m["val/greedy_accuracy"] <= 1 for m in ms)
    assert ms[-1]["val/best_greedy_accuracy"] == max(m["val/greedy_accuracy"] for m in ms)
    best, _ = load_model(str(tmp_path / "best"), device="cpu")
    assert best.config.vocab_size == model.config.vocab_size
    t = Trace.load(tmp_path / "traces" / "step00002.safetensors")
    assert t.meta["train_step"] == 2 and len(t.meta["rewards"]) == 4 and t.num_rollouts == 4


def test_resume_with_another_config_is_refused(tmp_path):
    model, tok = fresh()
    list(train(model, tok, RLConfig(mode="soft", steps=1, **SMALL), output_dir=tmp_path, progress=False))
    with pytest.raises(ValueError, match="another RLConfig"):
        next(train(model, tok, RLConfig(mode="hard", steps=2, **SMALL), output_dir=tmp_path, progress=False))


def test_damaged_checkpoint_is_reported(tmp_path):
    (tmp_path / CHECKPOINT).write_bytes(b"not a checkpoint")
    model, tok = fresh()
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        next(train(model, tok, RLConfig(steps=1, **SMALL), output_dir=tmp_path, progress=False))


@pytest.mark.parametrize("fields, message", [
    (dict(group_size=1), "group_size"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(learning_rate=-1e-4), "learning_rate"),
    (dict(mode="nope"), "mode"),
    (dict(algorithm="ppo"), "algorithm"),
    (dict(steps=0), "steps"),
    (dict(epsilon=1.5), "epsilon"),
    (dict(cot_weight=-1.0), "cot_weight"),
    (dict(embedding_lr_scale=float("nan")), "embedding_lr_scale"),
    (dict(mode="hard", noise_scale=0.1), "noise_scale"),
    (dict(mode="soft-grpo", noise_scale=0.1), "noise_scale"),
    (dict(mode="soft", noise_scale=0.0), "noise_scale"),
    (dict(mode="fuzzy", noise_scale=float("inf")), "noise_scale"),
])
def test_bad_configuration(fields, message):
    with pytest.raises(ValueError, match=f"RLConfig.{message}"):
        RLConfig(**fields)


def test_noise_scale_sets_the_rollout_sigma_and_greedy_modes():
    cfg = RLConfig(mode="soft", noise_scale=0.1)
    assert cfg.rollout_mode.noise_scale == 0.1 and cfg.rollout_mode.cot_temperature == 0.5
    assert RLConfig(mode="fuzzy").rollout_mode.noise_scale == 0.33  # the paper's γ by default
    g = cfg.greedy_mode
    assert (g.kind, g.cot_temperature, g.noise_scale, g.answer_temperature) == ("soft", 0.5, 0.0, 0.0)
    g = RLConfig(mode="soft-grpo").greedy_mode  # argmax tokens: the Gumbel-max with no noise
    assert (g.kind, g.cot_temperature, g.top_k) == ("hard", 0.0, None) and g.is_greedy


def test_untrainable_mode_and_task_without_cue_are_refused():
    model, tok = fresh()
    with pytest.raises(ValueError, match="cannot be trained"):
        next(train(model, tok, RLConfig(mode="soft-greedy", steps=1, **SMALL), progress=False))

    class NoCue(ArithmeticTask):
        answer_cue = ""

    with pytest.raises(ValueError, match="no answer cue"):
        next(train(model, tok, RLConfig(steps=1, **SMALL), task=NoCue(), progress=False))


def test_cot_weight_zero_and_frozen_embeddings(tmp_path):
    """embedding_lr_scale=0 keeps E (and the tied head) exactly as it was while the blocks train;
    cot_weight=0 drops the Gaussian CoT terms, which dominate a soft step's gradient norm."""
    model, tok = fresh()
    E0 = model.get_input_embeddings().weight.detach().clone()
    cfg = RLConfig(mode="soft", steps=2, learning_rate=1e-3, warmup_steps=0, embedding_lr_scale=0.0,
                   **{**SMALL, "prompts_per_step": 3, "group_size": 8})
    ms = list(train(model, tok, cfg, progress=False))
    assert torch.equal(model.get_input_embeddings().weight, E0)
    assert any(not torch.equal(p, q) for p, q in zip(model.model.layers[0].parameters(),
                                                      fresh()[0].model.layers[0].parameters()))
    # the CoT terms dominate the gradient norm; without them it is far smaller
    norms = {}
    for w in (1.0, 0.0):
        model, tok = fresh()
        cfg = RLConfig(mode="soft", steps=1, learning_rate=1e-3, warmup_steps=0, cot_weight=w,
                       **{**SMALL, "prompts_per_step": 3, "group_size": 8})
        norms[w] = next(train(model, tok, cfg, progress=False))["grad_norm"]
    assert 0 < norms[0.0] < norms[1.0]
    assert len(ms) == 2


@pytest.mark.slow
@pytest.mark.parametrize("prompts", [2, 1], ids=["prompts-split", "samples-split"])
def test_two_processes_with_accelerate_equal_one_process(tmp_path, prompts):
    """`accelerate launch --cpu --num_processes 2` (gloo): each process rolls out half the rollouts: half the
    prompts, or, with one prompt, half its samples (the group's baseline then needs the other process's
    rewards). The averaged update equals the one-process update to within 1e-6 (gloo's all-reduce sums in
    another order, so the last bits may differ; the rollouts, and so the rewards, are the same)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    args = ["train", "--mode", "soft", "--steps", "2", "--prompts-per-step", str(prompts), "--group-size", "4",
            "--max-cot-tokens", "24", "--max-answer-tokens", "6", "--eval-every", "0", "--save-every", "0",
            "--learning-rate", "1e-3", "--warmup-steps", "0", "--quiet", "--seed", "2"]  # seed 2: a group's rewards differ
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the shipped CPU config (configs/accelerate/ddp_cpu.yaml) in one case, the same as flags in the other
    launch = (["--config_file", str(Path(__file__).parents[1] / "configs" / "accelerate" / "ddp_cpu.yaml")]
              if prompts == 1 else ["--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                                    "--dynamo_backend", "no"])
    two = subprocess.run([str(bin_dir / "accelerate"), "launch", *launch, "-m", "softviz.cli", *args,
                          "--output-dir", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([str(bin_dir / "softviz"), *args, "--output-dir", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    a = torch.load(tmp_path / "one" / CHECKPOINT, weights_only=False)["model"]
    b = torch.load(tmp_path / "two" / CHECKPOINT, weights_only=False)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    base, _ = fresh()
    metrics = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert min(m["frac_reward_zero_std"] for m in metrics) < 1  # some group had an advantage to learn from...
    assert any(not torch.equal(a[k], v) for k, v in base.state_dict().items())  # ...so the run did update the model
    steps_two = [json.loads(l) for l in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    steps_one = [json.loads(l) for l in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps_two] == [1, 2]  # one process wrote, once per step
    assert [m["reward"] for m in steps_two] == pytest.approx([m["reward"] for m in steps_one])


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_killed_run_resumes_to_the_uninterrupted_result(sig, tmp_path):
    """Kill `softviz train` in the middle of a run; the checkpoint on disk is whole, and running the same
    command again finishes with exactly the weights of a run that was never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "softviz")
    steps = 40  # long enough that the signal lands mid-run on an idle machine too
    args = ["train", "--mode", "soft", "--steps", str(steps), "--prompts-per-step", "2", "--group-size", "2",
            "--max-cot-tokens", "24", "--max-answer-tokens", "6", "--eval-every", "0", "--save-every", "1",
            "--learning-rate", "1e-3", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    # a background job (CI runs `make test` under nohup) inherits SIGINT as ignored; a terminal's Ctrl-C does not
    proc = subprocess.Popen([exe, *args, "--output-dir", str(killed)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "metrics.jsonl").exists():
        time.sleep(0.05)
    while time.time() < deadline and len((killed / "metrics.jsonl").read_text().splitlines()) < 3:
        time.sleep(0.05)
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume" in err
    step = torch.load(killed / CHECKPOINT, weights_only=False)["step"]
    assert 1 <= step < steps, "the kill should land mid-run (the checkpoint may trail the metrics by a step)"
    assert not [p for p in killed.iterdir() if p.name.endswith(".tmp")]
    subprocess.run([exe, *args, "--output-dir", str(killed)], env=env, check=True, capture_output=True)
    subprocess.run([exe, *args, "--output-dir", str(whole)], env=env, check=True, capture_output=True)
    a = torch.load(killed / CHECKPOINT, weights_only=False)
    b = torch.load(whole / CHECKPOINT, weights_only=False)
    assert a["step"] == b["step"] == steps
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    logged = [json.loads(l)["step"] for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, steps + 1))


def test_a_torn_metrics_line_is_dropped_on_resume(tmp_path):
    from softviz.train import _truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "reward": 5}\n{"step": 2, "reward": 6}\n{"step": 3, "rew')
    _truncate_metrics(path, 2)
    assert [json.loads(l)["step"] for l in path.read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("name, machines, processes", [("ddp_1node", 1, 8), ("ddp_2nodes", 2, 16), ("ddp_cpu", 1, 2),
                                                      ("fsdp_1node", 1, 8), ("fsdp_2nodes", 2, 16), ("fsdp_cpu", 1, 2)])
def test_shipped_accelerate_configs_load(name, machines, processes):
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(Path(__file__).parents[1] / "configs" / "accelerate" / f"{name}.yaml"))
    assert (cfg.num_machines, cfg.num_processes) == (machines, processes)
    if name.startswith("fsdp"):
        assert str(cfg.distributed_type).endswith("FSDP") and cfg.use_cpu == name.endswith("cpu")
        assert cfg.fsdp_config["fsdp_version"] == 2 and cfg.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert cfg.fsdp_config["fsdp_cpu_ram_efficient_loading"] is True
    else:
        assert str(cfg.distributed_type).endswith("MULTI_CPU" if name == "ddp_cpu" else "MULTI_GPU")
    assert str(cfg.mixed_precision) in ("no", "PrecisionType.NO")  # softviz keeps fp32 where it matters itself
