"""GSM8K and MATH tasks on small local fixtures in the real datasets' schemas (no network), and configs/."""

import dataclasses
import json
import threading
from pathlib import Path

import pytest

from softviz.cli import main
from softviz.config import RLConfig
from softviz.tasks import ANSWER_CUE, GSM8KTask, MATHTask, get_task
from softviz.tasks.gsm8k import gsm8k_gold, verify_equal
from softviz.tasks.math import math_gold

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
GSM8K = FIXTURES / "gsm8k"  # a Hub snapshot's layout: main/{train,test}-00000-of-00001.parquet
MATH500 = FIXTURES / "math500"  # test.jsonl, as on the Hub
MATH_TRAIN = FIXTURES / "math_train"  # one subfolder per subject config, as EleutherAI/hendrycks_math
CONFIGS = sorted((ROOT / "configs").glob("*.json"))


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
    for var in ("SOFTVIZ_GSM8K_PATH", "SOFTVIZ_MATH500_PATH", "SOFTVIZ_MATH_TRAIN_PATH"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def gsm8k():
    return GSM8KTask(path=str(GSM8K))


@pytest.fixture(scope="module")
def math_task():
    return MATHTask(path=str(MATH500), train_path=str(MATH_TRAIN), validation_size=2)


def test_gsm8k_loads_splits(gsm8k):
    # 24 train rows: the default 500 held out is capped at a fifth, 24 // 5 = 4
    assert [len(gsm8k.split(s)) for s in ("train", "validation", "test")] == [20, 4, 6]
    ex = gsm8k.examples("test", 2)[1]
    assert ex.question.startswith("Carla earns $36 an hour") and ex.answer == "18"
    assert "####" not in ex.reasoning and ex.reasoning.endswith("$<<0.6*30=18>>18.")
    assert ex.meta == {"split": "test", "index": 1, "source": "openai/gsm8k"}
    assert all(e.meta["split"] == "validation" for e in gsm8k.split("validation"))


def test_held_out_split_is_deterministic_and_disjoint(gsm8k, tmp_path):
    train = {e.question for e in gsm8k.split("train")}
    val = [e.question for e in gsm8k.split("validation")]
    assert not train & set(val) and len(train) + len(val) == 24
    assert val == [e.question for e in GSM8KTask(path=str(GSM8K)).split("validation")]
    # the same rows in reverse order, as JSONL files: the same problems are held out
    import pandas as pd

    files = {}
    for split in ("train", "test"):
        rows = pd.read_parquet(GSM8K / "main" / f"{split}-00000-of-00001.parquet").to_dict("records")[::-1]
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(r) + "\n" for r in rows))
    reordered = GSM8KTask(data_files=files)
    assert sorted(e.question for e in reordered.split("validation")) == sorted(val)
    assert {e.question for e in reordered.split("train")} == train


def test_train_order_is_seeded_and_cycles(gsm8k):
    a = gsm8k.examples("train", 20, seed=0)
    assert a == gsm8k.examples("train", 8, seed=0) + gsm8k.examples("train", 12, seed=0, start=8)
    assert a != gsm8k.examples("train", 20, seed=1)
    assert sorted(e.question for e in a) == sorted(e.question for e in gsm8k.split("train"))  # one epoch
    two = gsm8k.examples("train", 40, seed=0)
    assert sorted(e.question for e in two[20:]) == sorted(e.question for e in a) and two[20:] != a  # reshuffled
    held = {e.question for e in gsm8k.split("validation")}
    assert not held & {e.question for e in gsm8k.examples("train", 100, start=37)}
    # validation and test keep one order whatever the seed, and cannot run past their end
    assert gsm8k.examples("validation", 4, seed=3) == gsm8k.examples("validation", 4)
    with pytest.raises(ValueError, match="test has 6 examples"):
        gsm8k.examples("test", 5, start=2)
    with pytest.raises(ValueError, match="split must be one of"):
        gsm8k.examples("dev", 1)


def test_gold_extraction(gsm8k, math_task):
    assert gsm8k_gold("She has 1,000 + 104 = <<1000+104=1104>>1104.\n#### 1,104") == "1104"
    with pytest.raises(ValueError, match="####"):
        gsm8k_gold("no final answer")
    golds = {e.answer for e in gsm8k.split("train") + gsm8k.split("validation")}
    assert {"1104", "2250"} <= golds and not any("," in g for g in golds)  # "#### 1,104" in the fixture
    # MATH-500: the `answer` column; MATH train: the solution's last \boxed{}, nested braces kept
    assert [e.answer for e in math_task.split("test")] == [
        "\\frac{1}{2}", "\\left( 3, \\frac{\\pi}{2} \\right)", "3", "10", "1000", "5"]
    assert math_gold({"solution": "so $\\boxed{2}$, wait: $\\boxed{\\frac{3}{4}}$."}) == "\\frac{3}{4}"
    assert math_gold({"solution": "no box"}) is None


def test_math_splits_and_meta(math_task):
    test = math_task.split("test")
    assert len(test) == 6 and test[1].meta["unique_id"] == "test/precalculus/807.json"
    assert test[1].meta["subject"] == "Precalculus" and test[1].meta["level"] == 2
    train, val = math_task.split("train"), math_task.split("validation")
    # 12 train rows in two subject folders; the one without a \boxed{} answer is dropped
    assert len(train) + len(val) == 11 and len(val) == 2
    assert {e.meta["subject"] for e in train + val} == {"Algebra", "Prealgebra"}
    assert not {e.question for e in train} & {e.question for e in val}
    assert not {e.question for e in train + val} & {e.question for e in test}


@pytest.mark.parametrize("predicted, gold, expected", [
    ("0.5", "\\frac{1}{2}", True),
    ("\\dfrac12", "\\frac{1}{2}", True),
    ("1,000", "1000", True),  # thousands separator
    ("1000", "1,000", True),
    ("1,000,000", "1000000", True),
    ("x=3", "3", True),  # an equation's right-hand side
    ("18.0", "18", True),
    ("\\$18", "18", True),
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("42 \\text{ cookies}", "42", True),
    ("4", "3", False),
    ("-5", "5", False),
    ("1.000", "1000", False),  # a decimal point is not a separator
    ("1,2", "12", False),
    ("", "3", False),
])
def test_math_verify_equivalence(gsm8k, predicted, gold, expected):
    assert verify_equal(predicted, gold) is expected
    assert gsm8k.is_correct(predicted, gold) is expected
    assert gsm8k.is_correct(None, gold) is False


def test_verify_works_off_the_main_thread():
    # Math-Verify's SIGALRM timeout cannot be set outside the main thread (the app's handlers run in threads)
    out = []
    t = threading.Thread(target=lambda: out.append(verify_equal("0.5", "\\frac{1}{2}")))
    t.start()
    t.join()
    assert out == [True]


def test_rewards(gsm8k, math_task):
    # the paper's eq. 11: 100 correct (Math-Verify), 10 wrong but boxed, 0 without a box
    completions = [" \\boxed{1,488}.", " \\boxed{1487}", " 1488", "\\boxed{x = 1488}"]
    assert gsm8k.reward(prompts=["p"] * 4, completions=completions, answer=["1488"] * 4) == [100.0, 10.0, 0.0, 100.0]
    golds = [e.answer for e in math_task.split("test")]
    completions = ["\\boxed{0.5}", "\\boxed{(3, \\pi/2)}", "\\boxed{x=3}", "\\boxed{11}", "\\boxed{1,000}", "5"]
    assert math_task.reward(completions=completions, answer=golds) == [100.0, 100.0, 100.0, 10.0, 100.0, 0.0]
    assert math_task.score("so \\boxed{\\frac{1}{2}} done", "0.5") == 100.0


def test_prompt_follows_the_paper(gsm8k, math_task):
    ex = gsm8k.split("test")[0]
    p = gsm8k.prompt(ex)
    assert p.endswith(f"User: {ex.question} Assistant:")
    assert ANSWER_CUE + "\\boxed{[answer]}" in p and "\\boxed{}" in p and "{{" not in p
    assert math_task.prompt("What is $\\{1\\}$?").endswith("User: What is $\\{1\\}$? Assistant:")
    assert gsm8k.answer_cue == math_task.answer_cue == ANSWER_CUE


def _offline(monkeypatch, tmp_path):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_offline_error_names_the_dataset_and_the_fix(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(ValueError) as err:
        GSM8KTask().examples("test", 1)
    msg = str(err.value)
    assert "openai/gsm8k" in msg and "hf download openai/gsm8k --repo-type dataset" in msg
    assert "SOFTVIZ_GSM8K_PATH" in msg and "path=" in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__  # one message, no chained traceback
    # MATH-500 is test-only: train comes from the MATH train set, and the error says so
    with pytest.raises(ValueError, match="MATH-500 is test-only.*EleutherAI/hendrycks_math.*SOFTVIZ_MATH_TRAIN_PATH"):
        MATHTask(path=str(MATH500)).examples("train", 1)
    with pytest.raises(ValueError, match="HuggingFaceH4/MATH-500.*SOFTVIZ_MATH500_PATH"):
        MATHTask(train_path=str(MATH_TRAIN)).examples("test", 1)
    with pytest.raises(ValueError, match="is not a folder"):
        GSM8KTask(path=str(tmp_path / "nowhere")).examples("test", 1)
    with pytest.raises(ValueError, match="data_files has no 'train' entry"):
        MATHTask(data_files={"test": str(MATH500 / "test.jsonl")}).examples("train", 1)


def test_cli_reports_the_offline_error_without_a_traceback(monkeypatch, tmp_path, capsys):
    _offline(monkeypatch, tmp_path)
    assert main(["eval", "--task", "gsm8k", "--problems", "1", "--modes", "hard-greedy"]) == 2
    err = capsys.readouterr().err
    assert "could not load GSM8K (openai/gsm8k)" in err and "Traceback" not in err


def test_get_task_with_local_files(monkeypatch):
    task = get_task("gsm8k", path=str(GSM8K), validation_size=2)
    assert isinstance(task, GSM8KTask) and len(task.split("validation")) == 2
    math_task = get_task("math", path=str(MATH500), train_path=str(MATH_TRAIN))
    assert isinstance(math_task, MATHTask) and len(math_task.examples("test", 6)) == 6
    # offline users (and `softviz --task gsm8k`) point at local copies with environment variables
    monkeypatch.setenv("SOFTVIZ_GSM8K_PATH", str(GSM8K))
    monkeypatch.setenv("SOFTVIZ_MATH500_PATH", str(MATH500))
    monkeypatch.setenv("SOFTVIZ_MATH_TRAIN_PATH", str(MATH_TRAIN))
    assert get_task("gsm8k").examples("test", 1)[0].answer == "48"
    assert get_task("math").examples("train", 3)  # from the MATH train fixture
    with pytest.raises(ValueError, match="takes no options"):
        get_task("arithmetic", path="x")


def test_stdlib_math_is_not_shadowed():
    import math

    import softviz.tasks.math

    assert math.sqrt(16) == 4.0 and softviz.tasks.math.MATHTask is MATHTask


# ---- configs/ ---------------------------------------------------------------------------------------
MODELS = {"meta-llama/Llama-3.2-1B-Instruct": 1e-5, "meta-llama/Llama-3.2-3B-Instruct": 6e-6,
          "meta-llama/Llama-3.1-8B-Instruct": 3e-6,
          "Qwen/Qwen2.5-0.5B-Instruct": 2e-5, "Qwen/Qwen2.5-1.5B-Instruct": 1e-5, "Qwen/Qwen2.5-3B-Instruct": 8e-6}


def test_every_config_is_a_valid_paper_setting():
    assert len(CONFIGS) == 12
    readme = (ROOT / "configs" / "README.md").read_text()
    seen = set()
    for path in CONFIGS:
        settings = json.loads(path.read_text())
        model = settings.pop("model")
        for mode in ("hard", "soft", "fuzzy"):
            cfg = RLConfig(**{**settings, "mode": mode})  # validates
        assert (cfg.steps, cfg.prompts_per_step, cfg.group_size, cfg.warmup_steps) == (4000, 2, 32, 20)
        assert cfg.max_answer_tokens == 32 and cfg.algorithm == "rloo" and cfg.beta == 0
        assert cfg.max_cot_tokens == {"gsm8k": 128, "math": 512}[cfg.task]
        assert cfg.learning_rate == MODELS[model]  # the same for hard, soft and fuzzy (paper App. D)
        get_task(cfg.task)  # a known task
        assert f"`{path.name}`" in readme
        seen.add((model, cfg.task))
    assert seen == {(m, t) for m in MODELS for t in ("gsm8k", "math")}


def test_cli_train_reads_config_and_flags_override(monkeypatch, tmp_path, capsys):
    import softviz.models
    import softviz.train

    calls = {}

    def load_model(name, device=None):  # no model is loaded: only the settings matter here
        calls["model"] = name
        return None, None

    def train(model, tokenizer, cfg, **kwargs):
        calls["cfg"] = cfg
        return iter(())

    monkeypatch.setattr(softviz.models, "load_model", load_model)
    monkeypatch.setattr(softviz.train, "train", train)
    path = ROOT / "configs" / "llama-3.2-3b-instruct_gsm8k.json"
    assert main(["train", "--config", str(path), "--mode", "fuzzy", "--learning-rate", "1e-6", "--quiet"]) == 0
    cfg = calls["cfg"]
    assert calls["model"] == "meta-llama/Llama-3.2-3B-Instruct"
    assert (cfg.mode, cfg.learning_rate) == ("fuzzy", 1e-6)  # flags win
    assert (cfg.task, cfg.max_cot_tokens, cfg.steps, cfg.group_size) == ("gsm8k", 128, 4000, 32)  # from the file
    printed = json.loads(capsys.readouterr().out.split("RL run: ", 1)[1].splitlines()[0])
    assert printed == dataclasses.asdict(cfg) | {"trace_steps": []}

    calls.clear()
    assert main(["train", "--config", str(path), "--model", "some/other-model", "--quiet"]) == 0
    assert calls["model"] == "some/other-model" and calls["cfg"].mode == "soft"


def test_cli_config_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": "m", "lr": 1e-5}))
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'lr'" in err and "learning_rate" in err and "model" in err
    bad.write_text("{not json")
    assert main(["train", "--config", str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.json")]) == 2
