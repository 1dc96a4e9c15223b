"""FSDP2 under `accelerate launch --config_file configs/accelerate/fsdp_cpu.yaml` (2 CPU processes, gloo): the
sharded run learns what one process learns, holds half the parameters per process, rolls out in lock-step,
checkpoints whole and resumes after a kill, and writes best/ and final/ as ordinary model folders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from softviz.generate import generate, lock_step
from softviz.models import load_model
from softviz.sharding import SHARDED_CHECKPOINT
from softviz.train import CHECKPOINT

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FSDP_CPU = ROOT / "configs" / "accelerate" / "fsdp_cpu.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ARGS = ["train", "--mode", "soft", "--prompts-per-step", "2", "--group-size", "4", "--max-cot-tokens", "24",
        "--max-answer-tokens", "6", "--learning-rate", "1e-3", "--warmup-steps", "0", "--quiet", "--seed", "2",
        "--eval-size", "8"]


def fsdp(*args, launch=(), timeout=600, **kwargs):
    return subprocess.run([str(BIN / "accelerate"), "launch", "--config_file", str(FSDP_CPU), *launch, "-m",
                           "softviz.cli", *args], env=ENV, capture_output=True, text=True, timeout=timeout, **kwargs)


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_lock_step_keeps_stepping_on_padding_and_changes_no_rollout():
    """A process whose rows have ended keeps stepping while another process still runs (here: a stand-in that
    says "still running" for 5 more steps): the extra steps feed padding and leave every rollout as it was."""
    model, tok = load_model()
    prompts = ["User: Tom has 3 apples and gets 4 more. How many apples does Tom have now? Assistant:"]
    plain = generate(model, tok, prompts, "soft", n=3, max_cot_tokens=24, max_answer_tokens=6, seed=1)
    calls = []

    def others_still_running(running: bool) -> bool:
        calls.append(running)
        return running or sum(not c for c in calls) <= 5

    with lock_step(others_still_running):
        stepped = generate(model, tok, prompts, "soft", n=3, max_cot_tokens=24, max_answer_tokens=6, seed=1)
    assert sum(not c for c in calls) == 6  # it went on for 5 steps after its own rows had all ended
    assert stepped.answer_texts == plain.answer_texts
    assert torch.equal(stepped.cot_tokens, plain.cot_tokens) and torch.equal(stepped.cot_lengths, plain.cot_lengths)
    assert torch.allclose(stepped.cot_logprobs, plain.cot_logprobs, atol=1e-5)


@pytest.mark.slow
def test_two_fsdp_processes_learn_what_one_process_learns(tmp_path):
    """3 steps with validation: the 2-process FSDP run's rewards and losses equal the 1-process run's, its
    weights match to within the float noise Adam amplifies (reduce-scatter sums in another order; Adam turns
    a near-zero gradient's sign into a full step), each process holds about half the parameters, the shards'
    CoTs end at different lengths (lock-step), and best/ and final/ load as ordinary model folders."""
    steps = ["--steps", "3", "--eval-every", "1", "--save-every", "1", "--trace-steps", "1,2,3"]
    two = fsdp(*ARGS, *steps, "--output-dir", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([str(BIN / "softviz"), *ARGS, *steps, "--output-dir", str(tmp_path / "one")], env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    m1, m2 = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [m["step"] for m in m2] == [0, 1, 2, 3]  # one process wrote, once per step
    for a, b in zip(m1[1:], m2[1:]):
        assert b["reward"] == pytest.approx(a["reward"]) and b["accuracy"] == pytest.approx(a["accuracy"])
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3) and b["grad_norm"] == pytest.approx(a["grad_norm"],
                                                                                                 rel=1e-3)
    assert [m["val/greedy_accuracy"] for m in m2] == pytest.approx([m["val/greedy_accuracy"] for m in m1])
    # about half the parameters per process: each holds half of every block, and the whole embedding (tied to the
    # LM head) and final norm, which stay replicated (6% of this model, 13% of Llama-3.1-8B)
    base_model = load_model()[0]
    whole = (base_model.get_input_embeddings().weight.numel() + base_model.model.norm.weight.numel()) * 4 / 2**20
    total = m1[1]["memory/param_mb"]
    assert m2[1]["memory/param_mb"] == pytest.approx((total - whole) / 2 + whole, rel=1e-3)
    assert m2[1]["memory/param_mb"] / total < 0.55
    a = torch.load(tmp_path / "one" / CHECKPOINT, weights_only=False)
    b = torch.load(tmp_path / "two" / CHECKPOINT, weights_only=False)
    base = load_model()[0].state_dict()
    moved = sum(float((a["model"][k] - base[k]).pow(2).sum()) for k in base) ** 0.5
    apart = sum(float((a["model"][k] - b["model"][k]).pow(2).sum()) for k in base) ** 0.5
    assert moved > 0.1 and apart < 0.01 * moved, (apart, moved)
    # lock-step: in some step the rows of process 0 (0-3) and of process 1 (4-7) ended at different lengths
    traces = sorted((tmp_path / "one" / "traces").glob("*.safetensors"))
    from softviz import Trace

    ends = [Trace.load(t).lengths for t in traces]
    assert any(int(e[:4].max()) != int(e[4:].max()) for e in ends), ends
    # the folders are ordinary Hugging Face models; final/ holds the checkpoint's weights
    final, _ = load_model(str(tmp_path / "two" / "final"))
    assert all(torch.equal(final.state_dict()[k], b["model"][k]) for k in b["model"])
    ev = subprocess.run([str(BIN / "softviz"), "eval", "--model", str(tmp_path / "two" / "best"), "--modes",
                         "hard-greedy", "--problems", "4", "-n", "1"], env=ENV, capture_output=True, text=True,
                        timeout=300)
    assert ev.returncode == 0 and "hard-greedy" in ev.stdout, ev.stderr[-2000:]
    assert isinstance(next(iter(b["optimizer"]["state"])), str)  # keyed by parameter name: resumable anywhere


def final_weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "final" / "model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["whole", "sharded"])
def test_a_killed_fsdp_run_resumes_to_the_uninterrupted_result(tmp_path, kind):
    """Kill a 2-process FSDP run mid-way (SIGTERM to accelerate's launcher, which stops both processes); the
    checkpoint on disk is complete (whole: checkpoint.pt gathered on process 0; sharded: each process's shards
    under checkpoint/, fsdp_state_dict_type SHARDED_STATE_DICT), and the same command resumes it to the weights
    of a run never interrupted. Either also resumes on one process."""
    steps = 16
    args = [*ARGS, "--steps", str(steps), "--eval-every", "0", "--save-every", "1"]
    launch = ["--fsdp_state_dict_type", "SHARDED_STATE_DICT"] if kind == "sharded" else []
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = subprocess.Popen([str(BIN / "accelerate"), "launch", "--config_file", str(FSDP_CPU), *launch, "-m",
                             "softviz.cli", *args, "--output-dir", str(killed)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and not (killed / "metrics.jsonl").exists():
        time.sleep(0.05)
    while time.time() < deadline and len((killed / "metrics.jsonl").read_text().splitlines()) < 4:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # the launcher and both processes, as a scheduler's kill would
    proc.communicate(timeout=120)
    if kind == "whole":
        step = torch.load(killed / CHECKPOINT, weights_only=False)["step"]
        assert not (killed / SHARDED_CHECKPOINT).exists()
    else:
        pointer = json.loads((killed / SHARDED_CHECKPOINT / "latest.json").read_text())
        step = pointer["step"]
        kept = sorted(p.name for p in (killed / SHARDED_CHECKPOINT).iterdir() if p.name != "latest.json")
        assert pointer["folder"] == f"step-{step:06d}" in kept and not (killed / CHECKPOINT).exists()
        assert len(kept) <= 2  # the newest complete one, and at most one being written when the kill came
    shutil.copytree(killed, tmp_path / "one")
    assert 1 <= step < steps, "the kill should land mid-run"
    assert not [p for p in killed.iterdir() if ".tmp" in p.name]
    resumed = fsdp(*args, "--output-dir", str(killed), launch=launch)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = fsdp(*args, "--output-dir", str(whole), launch=launch)
    assert straight.returncode == 0, straight.stderr[-3000:]
    a, b = final_weights(killed), final_weights(whole)
    for k in b:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert [m["step"] for m in metrics(killed)] == list(range(1, steps + 1))
    if kind == "whole":
        assert torch.load(killed / CHECKPOINT, weights_only=False)["step"] == steps
    else:
        assert sorted(p.name for p in (killed / SHARDED_CHECKPOINT).iterdir()) == ["latest.json", f"step-{steps:06d}"]
    # one process resumes the 2-process checkpoint (a whole model, no accelerate; the optimizer's groups and the
    # schedule's differ from FSDP's) and continues to within the float noise of two processes (see the test
    # above) of the uninterrupted run; it then checkpoints whole
    one = subprocess.run([str(BIN / "softviz"), *args, "--output-dir", str(tmp_path / "one")], env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    assert [m["step"] for m in metrics(tmp_path / "one")] == list(range(1, steps + 1))
    c, base = final_weights(tmp_path / "one"), load_model()[0].state_dict()
    moved = sum(float((b[k] - base[k]).pow(2).sum()) for k in b) ** 0.5
    apart = sum(float((c[k] - b[k]).pow(2).sum()) for k in b) ** 0.5
    assert moved > 0.1 and apart < 0.01 * moved, (apart, moved)
    assert (tmp_path / "one" / CHECKPOINT).exists() and not (tmp_path / "one" / SHARDED_CHECKPOINT).exists()


def test_only_process_0_reads_the_weights_under_ram_efficient_fsdp_loading(monkeypatch):
    """With accelerate's FSDP RAM-efficient loading, every process but the first builds the model on the meta
    device (softviz.sharding.shard then sends it its shards from process 0); without it, each loads the weights."""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "true")
    monkeypatch.setenv("RANK", "1")
    model, _ = load_model()
    assert all(p.is_meta for p in model.parameters())
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    monkeypatch.setenv("RANK", "0")
    assert not any(p.is_meta for p in load_model()[0].parameters())
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
    assert not any(p.is_meta for p in load_model()[0].parameters())


def test_a_model_sharded_elsewhere_with_e_split_is_refused_with_the_fix():
    """softviz needs the whole E outside the forward; a model whose embedding FSDP has split (sharded by other
    code) gets a message naming softviz.sharding.shard instead of a DTensor error deep in p·E."""
    import socket

    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from softviz.generate import embedding_matrix

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{port}")
    try:
        model, _ = load_model()
        fully_shard(model)  # everything in one unit, E included
        with pytest.raises(ValueError, match="softviz.sharding.shard"):
            embedding_matrix(model)
    finally:
        dist.destroy_process_group()


BASE = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
        "FSDP_ACTIVATION_CHECKPOINTING": "false", "FSDP_OFFLOAD_PARAMS": "false", "ACCELERATE_MIXED_PRECISION": "no",
        "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT"}


@pytest.mark.parametrize("changed, message", [
    ({}, None),  # what configs/accelerate/fsdp_*.yaml set
    ({"FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT"}, None),  # accelerate's FSDP2 default: checkpoints stay whole
    ({"FSDP_VERSION": "1"}, "set fsdp_version: 2"),
    ({"FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP"}, "size_based_auto_wrap_policy: softviz shards one unit per"),
    ({"FSDP_AUTO_WRAP_POLICY": "NO_WRAP"}, "gives no wrapping"),
    ({"FSDP_ACTIVATION_CHECKPOINTING": "true"}, "fsdp_activation_checkpointing: true is not supported"),
    ({"FSDP_OFFLOAD_PARAMS": "true"}, "fsdp_offload_params: true is not supported"),
    ({"ACCELERATE_MIXED_PRECISION": "fp16"}, "mixed_precision = fp16 in the accelerate config"),
], ids=["shipped", "sharded-state-dict", "fsdp1", "size-wrap", "no-wrap", "activation-ckpt", "offload", "fp16"])
def test_launch_settings_softviz_would_ignore_are_refused(monkeypatch, changed, message):
    from softviz.parallel import check_launch

    for k, v in {**BASE, **changed}.items():
        monkeypatch.setenv(k, v)
    if message is None:
        assert check_launch() is None
    else:
        with pytest.raises(ValueError, match=message) as e:
            check_launch()
        assert "configs/accelerate/fsdp_1node.yaml" in str(e.value) or "--mixed_precision no" in str(e.value)


def test_bf16_is_accepted_where_softviz_loads_bf16_only():
    from softviz.parallel import check_mixed_precision

    assert check_mixed_precision("bf16", cuda=True) is None and check_mixed_precision("no", cuda=False) is None
    with pytest.raises(ValueError, match="mixed_precision = bf16 .* fp32 on CPUs"):
        check_mixed_precision("bf16", cuda=False)


def test_the_cli_refuses_an_ignored_fsdp_setting_before_loading_the_model(tmp_path):
    r = subprocess.run([str(BIN / "accelerate"), "launch", "--config_file", str(FSDP_CPU),
                        "--fsdp_activation_checkpointing", "true", "-m", "softviz.cli", *ARGS, "--steps", "1",
                        "--output-dir", str(tmp_path / "run")], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "fsdp_activation_checkpointing: true is not supported" in r.stderr
    assert "RL run:" not in r.stdout and not (tmp_path / "run").exists()  # refused before loading and writing


def test_a_sharded_checkpoint_round_trips_and_a_damaged_one_is_refused_with_the_fix(tmp_path):
    """sharding.save_sharded on one process (torch.distributed.checkpoint writes without a process group) and
    checkpoint.load_sharded_checkpoint: weights, optimizer state and schedule come back exactly; a damaged pointer,
    an incomplete folder, another RLConfig or another model is refused before anything is loaded."""
    import dataclasses

    from softviz import sharding
    from softviz.config import RLConfig
    from softviz.checkpoint import load_sharded_checkpoint
    from softviz.train import _param_groups, cosine_schedule

    def fresh():
        model = load_model()[0]
        opt = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.learning_rate)
        return model, opt, cosine_schedule(opt, 2, 10)

    cfg = RLConfig(steps=10)
    model, opt, sched = fresh()
    for _ in range(3):  # some optimizer state and schedule to restore
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
        sched.step()
    state = {"step": 3, "best": 0.5, "sigma": 0.1, "config": dataclasses.asdict(cfg), "scheduler": sched.state_dict(),
             "rng": torch.get_rng_state()}
    sharding.save_sharded(tmp_path, model, opt, state, main=True, barrier=lambda: None)
    folder = sharding.latest_sharded(tmp_path)
    assert folder == tmp_path / "checkpoint" / "step-000003"

    other, other_opt, other_sched = fresh()
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match="another RLConfig .*steps: 10 -> 11"):
        load_sharded_checkpoint(folder, other, other_opt, other_sched, config=dataclasses.asdict(RLConfig(steps=11)))
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())  # nothing loaded
    ck = load_sharded_checkpoint(folder, other, other_opt, other_sched, config=dataclasses.asdict(cfg))
    assert ck["step"] == 3 and ck["best"] == 0.5
    assert all(torch.equal(model.state_dict()[k], v) for k, v in other.state_dict().items())
    for p, q in zip(model.parameters(), other.parameters()):
        a, b = opt.state[p], other_opt.state[q]
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert other_sched.last_epoch == sched.last_epoch and other_sched.get_last_lr() == sched.get_last_lr()

    small = AutoModelForCausalLM.from_config(model.config.__class__(**{**model.config.to_dict(), "num_hidden_layers": 1}))
    small_opt = torch.optim.AdamW(_param_groups(small, cfg), lr=cfg.learning_rate)
    with pytest.raises(ValueError, match=r"written for another model .*unexpected \[.model.layers.1"):
        load_sharded_checkpoint(folder, small, small_opt, cosine_schedule(small_opt, 2, 10))

    (folder / "state.pt").unlink()
    with pytest.raises(ValueError, match="incomplete; delete .*checkpoint to start over"):
        sharding.latest_sharded(tmp_path)
    (tmp_path / "checkpoint" / "latest.json").write_text("{not json")
    with pytest.raises(ValueError, match="latest.json is damaged; delete"):
        sharding.latest_sharded(tmp_path)
