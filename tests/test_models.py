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
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # read once at import: without this, a run that imported the hub earlier waits ~45 s on network timeouts
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
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


@pytest.mark.parametrize("device", ["tpu", "", "cuda:x", "CPU", "meta", "cuda:99"])
def test_bad_device_is_a_clear_error(device):
    # torch would raise a RuntimeError at .to(device), after the weights are read
    with pytest.raises(ValueError) as err:
        load_model(device=device)
    msg = str(err.value)
    assert msg.startswith(f"device = {device!r} is invalid") and "allowed here: cpu" in msg


def test_devices_this_machine_lacks_are_refused():
    import torch

    from softviz.models import check_device

    assert check_device(None) in ("cpu", "cuda") and check_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' is invalid: CUDA is not available here"):
            check_device("cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="'mps' is invalid: MPS is not available here"):
            check_device("mps")


def _damaged_copy(tmp_path, name, size):
    """The embedded model folder with `name` cut to `size` bytes (a copy or download that stopped)."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(EMBEDDED_DIR, folder)
    with open(folder / name, "r+b") as f:
        f.truncate(size)
    return folder


@pytest.mark.parametrize("size, why", [(6_000_000, "incomplete metadata, file not fully covered (6000000 bytes)"),
                                       (100, "invalid header length (100 bytes)"), (4, "header too small (4 bytes)")])
def test_truncated_weights_name_the_file_and_the_fix(tmp_path, size, why):
    folder = _damaged_copy(tmp_path, "model.safetensors", size)
    with pytest.raises(ValueError) as err:
        load_model(str(folder), device="cpu")
    msg = str(err.value)
    assert str(folder / "model.safetensors") in msg and "looks truncated or corrupt" in msg and why in msg
    assert "re-save" in msg and "download it again" in msg


def test_truncated_tokenizer_names_the_file(tmp_path):
    folder = _damaged_copy(tmp_path, "tokenizer.json", 3000)
    with pytest.raises(ValueError, match=r"tokenizer.json looks truncated or corrupt: it is not valid JSON"):
        load_model(str(folder), device="cpu")


def test_missing_shard_names_the_index(tmp_path, embedded):
    model, tok = embedded
    model.save_pretrained(tmp_path, max_shard_size="4MB")
    tok.save_pretrained(tmp_path)
    shards = sorted(tmp_path.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1
    m2, _ = load_model(str(tmp_path), device="cpu")  # whole: loads
    assert m2.num_parameters() == model.num_parameters()
    shards[-1].unlink()
    missing = shards[-1].name
    with pytest.raises(ValueError, match=rf"index.json looks truncated or corrupt: it lists the weights file {missing}"):
        load_model(str(tmp_path), device="cpu")
