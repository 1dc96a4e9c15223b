"""FSDP2 under `accelerate launch --config_file configs/accelerate/fsdp_cpu.yaml` (2 CPU processes, gloo): the
sharded run learns what one process learns, holds half the parameters per process, rolls out in lock-step,
checkpoints whole and resumes after a kill, and writes best/ and final/ as ordinary model folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from softviz.generate import generate, lock_step
from softviz.models import load_model
from softviz.train import CHECKPOINT

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FSDP_CPU = ROOT / "configs" / "accelerate" / "fsdp_cpu.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ARGS = ["train", "--mode", "soft", "--prompts-per-step", "2", "--group-size", "4", "--max-cot-tokens", "24",
        "--max-answer-tokens", "6", "--learning-rate", "1e-3", "--warmup-steps", "0", "--quiet", "--seed", "2",
        "--eval-size", "8"]


def fsdp(*args, timeout=600, **kwargs):
    return subprocess.run([str(BIN / "accelerate"), "launch", "--config_file", str(FSDP_CPU), "-m", "softviz.cli",
                           *args], env=ENV, capture_output=True, text=True, timeout=timeout, **kwargs)


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


@pytest.mark.slow
def test_a_killed_fsdp_run_resumes_to_the_uninterrupted_result(tmp_path):
    """Kill a 2-process FSDP run mid-way (SIGTERM to accelerate's launcher, which stops both processes); the
    checkpoint on disk is whole, and the same command resumes it to the weights of a run never interrupted."""
    steps = 16
    args = [*ARGS, "--steps", str(steps), "--eval-every", "0", "--save-every", "1"]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = subprocess.Popen([str(BIN / "accelerate"), "launch", "--config_file", str(FSDP_CPU), "-m", "softviz.cli",
                             *args, "--output-dir", str(killed)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and not (killed / "metrics.jsonl").exists():
        time.sleep(0.05)
    while time.time() < deadline and len((killed / "metrics.jsonl").read_text().splitlines()) < 4:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # the launcher and both processes, as a scheduler's kill would
    proc.communicate(timeout=120)
    step = torch.load(killed / CHECKPOINT, weights_only=False)["step"]
    assert 1 <= step < steps, "the kill should land mid-run"
    assert not [p for p in killed.iterdir() if ".tmp" in p.name]
    resumed = fsdp(*args, "--output-dir", str(killed))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = fsdp(*args, "--output-dir", str(whole))
    assert straight.returncode == 0, straight.stderr[-3000:]
    a = torch.load(killed / CHECKPOINT, weights_only=False)
    b = torch.load(whole / CHECKPOINT, weights_only=False)
    assert a["step"] == b["step"] == steps
    for k in b["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-6), k
    assert [m["step"] for m in metrics(killed)] == list(range(1, steps + 1))


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
    from softviz.train import check_launch

    for k, v in {**BASE, **changed}.items():
        monkeypatch.setenv(k, v)
    if message is None:
        assert check_launch() is None
    else:
        with pytest.raises(ValueError, match=message) as e:
            check_launch()
        assert "configs/accelerate/fsdp_1node.yaml" in str(e.value) or "--mixed_precision no" in str(e.value)


def test_bf16_is_accepted_where_softviz_loads_bf16_only():
    from softviz.train import check_mixed_precision

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
