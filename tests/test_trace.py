import pytest
import torch

from softviz import Trace, TraceConfig, generate
from softviz.hooks import recording
from softviz.tasks import ArithmeticTask

TASK = ArithmeticTask()
PROMPTS = [TASK.prompt(e) for e in TASK.examples("test", 2)]


@pytest.fixture(scope="module")
def soft_run(embedded):
    model, tok = embedded
    cfg = TraceConfig(top_k=5, nearest_k=3, keep_inputs=True, layers=("model.layers.1",))
    return generate(model, tok, PROMPTS, "soft", n=3, max_cot_tokens=40, seed=0, trace=cfg)


def test_trace_contents(soft_run, embedded):
    model, tok = embedded
    t = soft_run.trace
    B, T = t.tokens.shape
    assert B == 6 and T == int(t.lengths.max())
    assert t.topk_ids.shape == (B, T, 5) and t.nearest_ids.shape == (B, T, 3)
    assert torch.equal(t["entropy"], soft_run.cot_entropy)
    w = t.topk_weights[t.mask]
    assert (w.sum(-1) <= 1 + 1e-5).all() and (w[:, :-1] >= w[:, 1:]).all()  # sorted, at most 1
    assert torch.equal(t.topk_ids[..., 0][t.mask], t.tokens[t.mask])  # soft: top weight is the shadow token
    # the nearest-token scores are the cosine between the fed input and the embedding rows
    E = model.get_input_embeddings().weight.float()
    b, s = 0, 2
    cos = torch.nn.functional.cosine_similarity(t.inputs[b, s][None], E[t.nearest_ids[b, s]], dim=-1)
    assert torch.allclose(cos, t.nearest_scores[b, s], atol=1e-5)
    assert t["model.layers.1"].shape == (B, T, model.config.hidden_size)
    assert t.meta["mode"]["kind"] == "soft" and t.meta["seed"] == 0 and t.meta["prompts"] == PROMPTS
    assert t.decode(t.tokens[0, :3]) == [tok.decode([i]) for i in t.tokens[0, :3].tolist()]
    assert t.rollout(1)["answer_text"] == soft_run.answer_texts[1]


def test_layer_recording_matches_a_plain_forward(soft_run, embedded):
    model, tok = embedded
    t = soft_run.trace
    # hidden state after layer 1 at CoT step 0 of row 0, recomputed without cache
    p = torch.tensor(tok.encode(PROMPTS[0]))
    x = torch.cat([model.get_input_embeddings()(p), t.inputs[0, :1]])[None]
    with torch.no_grad():
        hs = model(inputs_embeds=x, output_hidden_states=True).hidden_states[2][0, -1]
    assert torch.allclose(hs, t["model.layers.1"][0, 0], atol=1e-4)


def test_save_load_round_trip(soft_run, tmp_path):
    t = soft_run.trace
    path = t.save(tmp_path / "run.trace.safetensors")
    u = Trace.load(path)
    for key in ["tokens", "topk_ids", "topk_weights", "entropy", "nearest_ids", "lengths", "inputs", "model.layers.1"]:
        assert torch.equal(t[key], u[key])
    assert u.meta == t.meta and u.token_strings == t.token_strings
    assert [p.name for p in tmp_path.iterdir()] == ["run.trace.safetensors"]  # no temp file left


def test_damaged_files_give_clear_errors(soft_run, tmp_path):
    path = soft_run.trace.save(tmp_path / "a.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        Trace.load(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_text("hello")
    with pytest.raises(ValueError, match="not a readable softviz trace"):
        Trace.load(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="no trace file"):
        Trace.load(tmp_path / "missing.safetensors")


def test_trace_size_does_not_grow_with_vocabulary(tokenizer):
    from conftest import tiny_model

    sizes = []
    for vocab in (len(tokenizer), 8 * len(tokenizer)):
        model = tiny_model("llama", vocab, tokenizer.pad_token_id, tokenizer.eos_token_id)
        r = generate(model, tokenizer, PROMPTS[:1], "soft", n=2, max_cot_tokens=10, max_answer_tokens=2, trace=True)
        sizes.append(r.trace.nbytes())
    assert sizes[0] == sizes[1]


def test_hooks_are_removed_even_on_error(embedded):
    model, _ = embedded
    layer = model.model.layers[0]
    before = dict(layer._forward_hooks)  # transformers keeps hooks of its own
    with pytest.raises(RuntimeError):
        with recording(model, ["model.layers.0"]):
            assert len(layer._forward_hooks) == len(before) + 1
            raise RuntimeError("boom")
    assert dict(layer._forward_hooks) == before
    with pytest.raises(ValueError, match="no module named"):
        with recording(model, ["model.layers.99"]):
            pass


def test_hook_can_replace_an_output(embedded):
    model, tok = embedded
    ids = torch.tensor([tok.encode(PROMPTS[0])])
    with torch.no_grad():
        base = model(input_ids=ids).logits
        with recording(model, ["model.layers.1.mlp"], fn=lambda t, name, step: torch.zeros_like(t)) as rec:
            ablated = model(input_ids=ids).logits
    assert not torch.allclose(base, ablated)
    assert rec.outputs["model.layers.1.mlp"][0].abs().sum() == 0


def test_gold_answers_have_one_name_and_old_files_load(soft_run, tmp_path):
    import dataclasses

    from softviz import analysis
    from softviz.tasks import normalize_number

    t = soft_run.trace
    B = t.num_rollouts
    new = dataclasses.replace(t, meta={**t.meta, "golds": ["8"] * B})
    old = dataclasses.replace(t, meta={**t.meta, "gold": "8"})  # how the app saved traces before "golds"
    new_back = Trace.load(new.save(tmp_path / "new.safetensors"))
    old_back = Trace.load(old.save(tmp_path / "old.safetensors"))
    assert old_back.meta["golds"] == new_back.meta["golds"] == ["8"] * B and "gold" not in old_back.meta
    expected = [a is not None and normalize_number(a) == "8" for a in t.meta["answers"]]
    assert analysis.rollout_correct(old_back) == analysis.rollout_correct(new_back) == expected
