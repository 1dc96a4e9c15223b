"""MATH (Hendrycks et al. 2021): competition problems with LaTeX answers, tested on MATH-500.

MATH-500 (`HuggingFaceH4/MATH-500`: 500 problems of the MATH test set, chosen by Lightman et al. 2023)
is test-only, so "test" reads it, while "train" and "validation" come from the MATH train set
(`EleutherAI/hendrycks_math`: 7,500 problems in seven subject configs). MATH-500 is drawn from the
MATH test set, so the two share no problem.
"""

from __future__ import annotations

import os

from softviz.tasks.base import Example, extract_boxed
from softviz.tasks.gsm8k import DatasetTask, load_rows

SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
            "prealgebra", "precalculus")  # the configs of EleutherAI/hendrycks_math


def math_gold(row: dict) -> str | None:
    """The gold answer: the `answer` column when there is one (MATH-500), else the solution's last \\boxed{}."""
    if row.get("answer"):
        return str(row["answer"]).strip()
    return extract_boxed(row.get("solution") or "")


class MATHTask(DatasetTask):
    """MATH: train and validation from the MATH train set, test from MATH-500.

    Args:
        path: a local copy of MATH-500 (see `load_rows`); default: $SOFTVIZ_MATH500_PATH, else the Hub.
        train_path: a local copy of the MATH train set; default: $SOFTVIZ_MATH_TRAIN_PATH, else the Hub.
            Its rows need `problem` and `solution` (the gold is the solution's last \\boxed{}) or `answer`.
        data_files: {"train": file, "test": file}: test in MATH-500's columns, train in MATH's.
        validation_size: train problems held out for validation (the paper does not say how many).
    """

    name = "math"
    test_id = "HuggingFaceH4/MATH-500"
    train_id = "EleutherAI/hendrycks_math"
    env = "SOFTVIZ_MATH500_PATH"
    train_env = "SOFTVIZ_MATH_TRAIN_PATH"

    def __init__(self, path: str | None = None, *, train_path: str | None = None, data_files: dict | None = None,
                 validation_size: int = 500):
        super().__init__(validation_size)
        self.path = path if path is not None else os.environ.get(self.env)
        self.train_path = train_path if train_path is not None else os.environ.get(self.train_env)
        self.data_files = data_files

    def load(self, split: str) -> list[Example]:
        if split == "test":
            rows = load_rows("MATH-500", self.test_id, "test", path=self.path, data_files=self.data_files,
                             env=self.env, required=("problem", "solution"))
            source = self.test_id
        else:
            rows = load_rows("the MATH train set (MATH-500 is test-only)", self.train_id, "train", configs=SUBJECTS,
                             path=self.train_path, data_files=self.data_files, env=self.train_env,
                             required=("problem", "solution"))
            source = self.train_id
        out = []
        for i, r in enumerate(rows):
            gold = math_gold(r)
            if gold is None:  # a solution without a \boxed{} answer cannot be scored
                continue
            meta = {"split": split, "index": i, "source": source, "subject": r.get("subject") or r.get("type"),
                    "level": r.get("level"), "unique_id": r.get("unique_id")}
            out.append(Example(r["problem"], gold, r["solution"], {k: v for k, v in meta.items() if v is not None}))
        return out
