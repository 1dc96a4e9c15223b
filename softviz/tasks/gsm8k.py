"""GSM8K (Cobbe et al. 2021, `openai/gsm8k`): grade-school word problems whose answer follows "####".

This file also holds what the real-data tasks share (math.py reuses it): the paper's prompt, reading a
split from the Hub or from local files, a validation split held out from train, and answer checking
with Math-Verify.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import random
import re
import threading
from pathlib import Path

from softviz import checks
from softviz.tasks.base import ANSWER_CUE, Example, Task, normalize_number, normalize_text

# The paper's zero-shot prompt (App. B), identical for Llama and Qwen. We wrote it from a description of its
# content, not from its exact words, so this wording is ours. No chat template: the model continues after
# "Assistant:" and its CoT ends with the answer cue. Braces are doubled for str.format.
PROMPT = ("A conversation between User and Assistant. The User asks a math question, and the Assistant "
          "reasons about it step by step in detail, then gives the final answer in \\boxed{{}}. The required "
          "format is: User: [question] Assistant: [detailed reasoning] " + ANSWER_CUE + "\\boxed{{[answer]}}.\n\n"
          "User: {question} Assistant:")

SPLITS = ("train", "validation", "test")
_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


# ---- answers ----------------------------------------------------------------------------------------
_PLAIN = re.compile(r"^-?\d+(\.\d+)?$")  # what normalize_number makes of a plain decimal number


def verify_equal(predicted: str, gold: str | int) -> bool:
    """True when Math-Verify finds `predicted` equal to `gold`, both read as the contents of a \\boxed{}.

    Reading both as box contents lets LaTeX and plain forms meet: "\\frac{1}{2}" = "0.5", "1,000" = "1000",
    "x=3" = "3". Two plain decimal numbers (after normalize_number: Unicode minus and digits, commas) are
    compared exactly, without Math-Verify's float conversion. Math-Verify times out with SIGALRM, which only the main thread may set, so other threads
    (the app's handlers) run without a timeout.
    """
    from math_verify import parse, verify

    a, b = normalize_number(predicted), normalize_number(gold)
    if _PLAIN.match(a) and _PLAIN.match(b):  # two plain numbers: exact, at any length
        return a == b
    predicted, gold = normalize_text(predicted), normalize_text(str(gold))
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=timeout)
    pred_parsed = parse("\\boxed{" + predicted + "}", parsing_timeout=timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


# ---- data -------------------------------------------------------------------------------------------
def load_rows(name: str, hub_id: str, split: str, *, configs: tuple = (None,), path: str | None = None,
              data_files: dict | None = None, env: str | None = None, required: tuple[str, ...] = ()) -> list[dict]:
    """The rows of one split of a dataset, from `data_files`, else a local folder `path`, else the Hub.

    Args:
        name, env: the dataset's display name and the environment variable that can hold `path` (for errors).
        hub_id: the Hub dataset id.
        split: the split as the dataset names it ("train" or "test").
        configs: the dataset's configs (subsets), concatenated in order. In a local folder, a subfolder of
            a config's name (as `hf download` writes it) is read when present.
        path: a local folder: a Hub snapshot (`hf download <id> --repo-type dataset --local-dir DIR`) or
            files named by split (train.jsonl, test.parquet, ...).
        data_files: {split: file or list of files}, each .json, .jsonl, .parquet or .csv.
        required: the columns every row needs; a source without them (or without rows) is a ValueError.
    """
    import datasets

    if data_files is not None:
        if split not in data_files:
            raise ValueError(f"{name}: data_files has no {split!r} entry (it has {sorted(data_files)})")
        files = data_files[split]
        files = [str(files)] if isinstance(files, (str, Path)) else [str(f) for f in files]
        builder = _BUILDERS.get(Path(files[0]).suffix)
        if builder is None:
            raise ValueError(f"{name}: cannot read {files[0]}: use .json, .jsonl, .parquet or .csv files")
        calls, where = [((builder,), {"data_files": {split: files}})], f"files {files}"
    elif path is not None:
        folder = Path(path)
        if not folder.is_dir():
            origin = f" (from ${env})" if env and os.environ.get(env) == str(path) else ""
            raise ValueError(f"{name}: {path}{origin} is not a folder")
        subsets = [c for c in configs if c and (folder / c).is_dir()] or [None]
        calls, where = [((str(folder),), {"data_dir": c}) for c in subsets], f"folder {folder}"
    else:
        calls, where = [((hub_id, c), {}) for c in configs], None
    try:
        parts = [datasets.load_dataset(*args, split=split, **kwargs) for args, kwargs in calls]
    except Exception as err:  # offline (ConnectionError), not found, a missing split, a torn or empty file
        if where is not None:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ValueError(f"{name}: could not read the {split!r} split from {where}: {first}") from None
        if not isinstance(err, OSError):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"could not load {name} ({hub_id}) from the Hugging Face Hub: {first}. Without a network, download it "
            f"elsewhere (`hf download {hub_id} --repo-type dataset --local-dir DIR`), copy DIR here and set "
            f"{env}=DIR or pass path=DIR; a folder of train/test .jsonl or .parquet files with the same columns "
            "works too") from None
    rows = [row for part in parts for row in part]
    if not rows:
        raise ValueError(f"{name}: the {split!r} split from {where or hub_id} has no rows")
    missing = [c for c in required if c not in rows[0]]
    if missing:
        raise ValueError(f"{name}: the {split!r} split from {where or hub_id} lacks the columns {missing} "
                         f"(it has {sorted(rows[0])}); {name} rows need {list(required)}")
    return rows


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


@functools.lru_cache(maxsize=8)
def _permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The order of the train rows in one epoch: a pure function of (n, seed, epoch)."""
    order = list(range(n))
    random.Random(int.from_bytes(_digest(repr(("train", seed, epoch)))[:8], "little")).shuffle(order)
    return tuple(order)


class DatasetTask(Task):
    """A task over a fixed dataset: train and test come from the source, validation is held out from train.

    The held-out questions are those with the smallest sha256 hashes: the same whatever the file order
    or the seed, and disjoint from train by question text. Subclasses implement `load(split)`.
    """

    prompt_template = PROMPT

    def __init__(self, validation_size: int = 500):
        if not isinstance(validation_size, int) or validation_size < 0:
            raise ValueError(f"validation_size must be an integer >= 0, got {validation_size!r}")
        self.validation_size = validation_size  # at most a fifth of the train rows are held out
        self._splits: dict[str, list[Example]] = {}

    def load(self, split: str) -> list[Example]:  # pragma: no cover - abstract
        """All examples of the source's "train" or "test" split, in file order."""
        raise NotImplementedError

    def split(self, name: str) -> list[Example]:
        """Every example of `name` ("train", "validation" or "test") in its fixed order; loaded once."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        if name not in self._splits:
            if name == "test":
                self._splits["test"] = self.load("test")
            else:
                rows = self.load("train")
                k = min(self.validation_size, len(rows) // 5)
                held = sorted(rows, key=lambda e: _digest(e.question))[:k]
                questions = {e.question for e in held}
                self._splits["validation"] = [dataclasses.replace(e, meta={**e.meta, "split": "validation"})
                                              for e in held]
                self._splits["train"] = [e for e in rows if e.question not in questions]
        return self._splits[name]

    def examples(self, split: str, n: int, *, seed: int = 0, start: int = 0) -> list[Example]:
        """`n` examples of `split` from position `start`.

        Train is shuffled by `seed`, with a new order each epoch, and cycles, so any `start` works (the RL
        loop reads [s·B, (s+1)·B) at step s). Validation and test keep one order whatever the seed, so runs
        with different seeds are scored on the same problems; asking for more than they hold is an error.
        """
        n, start = checks.integer("n", n, 0), checks.integer("start", start, 0)
        rows = self.split(split)
        if split != "train":
            if start + n > len(rows):
                raise ValueError(f"{self.name} {split} has {len(rows)} examples; asked for {n} from {start}")
            return rows[start:start + n]
        if not rows:
            raise ValueError(f"{self.name} train is empty")
        N = len(rows)
        return [rows[_permutation(N, seed, i // N)[i % N]] for i in range(start, start + n)]

    def is_correct(self, predicted: str | None, gold: str) -> bool:
        """Math-Verify equivalence (the paper scores with Math-Verify, eq. 11)."""
        return predicted is not None and verify_equal(predicted, gold)


# ---- GSM8K ------------------------------------------------------------------------------------------
def gsm8k_gold(answer: str) -> str:
    """The final answer of a GSM8K solution: the text after "####", thousands commas removed.

    >>> gsm8k_gold("48 + 24 = <<48+24=72>>72\\n#### 1,072")
    '1072'
    """
    if "####" not in answer:
        raise ValueError(f"a GSM8K answer ends with '#### <number>', got {answer[-60:]!r}")
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


class GSM8KTask(DatasetTask):
    """GSM8K: 7,473 train and 1,319 test problems; validation is held out from train.

    Args:
        path: a local copy (see `load_rows`); default: $SOFTVIZ_GSM8K_PATH, else the Hub.
        data_files: {"train": file, "test": file} in GSM8K's columns (question, answer).
        validation_size: train problems held out for validation (the paper does not say how many).
    """

    name = "gsm8k"
    hub_id = "openai/gsm8k"
    env = "SOFTVIZ_GSM8K_PATH"

    def __init__(self, path: str | None = None, *, data_files: dict | None = None, validation_size: int = 500):
        super().__init__(validation_size)
        self.path = path if path is not None else os.environ.get(self.env)
        self.data_files = data_files

    def load(self, split: str) -> list[Example]:
        rows = load_rows("GSM8K", self.hub_id, split, configs=("main",), path=self.path,
                         data_files=self.data_files, env=self.env, required=("question", "answer"))
        return [Example(str(r["question"]), gsm8k_gold(str(r["answer"])), str(r["answer"]).rsplit("####", 1)[0].strip(),
                        {"split": split, "index": i, "source": self.hub_id}) for i, r in enumerate(rows)]
