import pytest

from softviz.models import EMBEDDED_DIR, load_model


def test_embedded_model_loads_offline(embedded):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = embedded
    assert model.config.model_type == "llama"
    assert tok.padding_side == "left" and tok.pad_token_id is not None and tok.eos_token_id is not None
    # the folder is a plain transformers model folder
    m2 = AutoModelForCausalLM.from_pretrained(EMBEDDED_DIR)
    t2 = AutoTokenizer.from_pretrained(EMBEDDED_DIR)
    assert m2.num_parameters() == model.num_parameters()
    assert t2.encode("User: Tom has 5 apples.") == tok.encode("User: Tom has 5 apples.")


def test_embedded_model_is_small():
    size = sum(f.stat().st_size for f in EMBEDDED_DIR.iterdir())
    assert size <= 20 * 2**20, f"embedded model is {size / 2**20:.1f} MB, limit 20 MB"


def test_missing_path_gives_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no config.json"):
        load_model(str(tmp_path))


def test_hub_id_offline_says_how_to_get_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError) as err:
        load_model("Qwen/Qwen2.5-0.5B-Instruct", device="cpu")
    msg = str(err.value)
    assert "Qwen/Qwen2.5-0.5B-Instruct" in msg and "huggingface-cli download" in msg


def test_local_folder_roundtrip(tmp_path, embedded):
    model, tok = embedded
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m2, t2 = load_model(str(tmp_path), device="cpu")
    assert t2.vocab_size == tok.vocab_size
    assert m2.get_input_embeddings().weight.equal(model.get_input_embeddings().weight)


def test_save_model_replaces_a_folder_whole(tmp_path, embedded):
    from softviz.models import save_model

    model, tok = embedded
    save_model(model, tok, tmp_path / "m", meta={"a": 1})
    save_model(model, tok, tmp_path / "m", meta={"a": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary or old folder left
    assert '"a": 2' in (tmp_path / "m" / "softviz.json").read_text()
    m2, _ = load_model(str(tmp_path / "m"), device="cpu")
    assert m2.num_parameters() == model.num_parameters()
