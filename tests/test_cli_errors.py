"""Every CLI error is one line `softviz <cmd>: error: ...` on stderr with exit status 2, never a traceback.

Most bad command lines are refused before a model loads, so these run in well under a second each.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from softviz import cli
from softviz.cli import main
from softviz.models import EMBEDDED_DIR


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """main(argv) in-process -> (exit status, stdout, stderr); argparse errors exit, command errors return."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def paths(tmp_path):
    """The files bad command lines point at: a plain file (to put a path under), run folders, a damaged model."""
    file = tmp_path / "somefile.txt"
    file.write_text("not a folder\n")
    record = json.dumps({"step": 1, "reward": 1.0, "entropy": 0.1})
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(record + "\n")
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "metrics.jsonl").write_text(f'{record}\n{{"step": 2, "rew\n{record}\n')  # torn line 2 of 3
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"scale_rewards": "false"}))  # a string, not a JSON boolean
    return {"file": file, "run": run, "torn": torn, "config": config, "tmp": tmp_path}


def truncated_model(folder):
    """A copy of the embedded model whose weights file is cut in half (a copy that stopped midway)."""
    shutil.copytree(EMBEDDED_DIR, folder)
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    return folder


# (command line with {placeholders}, a word the one-line error must contain)
BAD = [
    ("compare --example -1", "--example"),
    ("compare --device tpu", "'tpu'"),
    ("compare --device ''", "device"),
    ("eval --device cuda:x", "'cuda:x'"),
    ("train --device meta", "'meta'"),
    ("matrix --device tpu --out {tmp}/m", "'tpu'"),
    ("eval -n 0", "-n"),
    ("eval --problems 0", "--problems"),
    ("eval --problems 2.5", "--problems"),
    ("eval --max-cot-tokens 0", "--max-cot-tokens"),
    ("compare --seed -1", "--seed"),
    ("demo --show 0", "--show"),
    ("demo --mode warm", "warm"),
    ("eval --split dev", "--split"),
    ("eval --json {file}/out.json", "--json"),
    ("eval --json {tmp}", "--json"),
    ("train --output-dir {file}/run", "--output-dir"),
    ("curves {run} --out {file}/x.png", "--out"),
    ("curves {run} --out {tmp}/x.txt", "--out"),
    ("matrix --out {file}/m", "--out"),
    ("matrix --seeds 0,a", "--seeds"),
    ("matrix --steps 0", "--steps"),
    ("matrix --task nope --out {tmp}/m", "'nope'"),
    ("train --task nope", "'nope'"),
    ("compare --modes ,", "--modes"),
    ("compare --modes soft,warm", "warm"),
    ("compare --prompt ''", "--prompt"),
    ("eval -k 64 -n 32", "-k 64"),
    ("eval -k 1,x", "-k"),
    ("eval -k 0", "-k"),
    ("train --mixture-embedding-grad ture", "--mixture-embedding-grad"),
    ("train --scale-rewards maybe", "--scale-rewards"),
    ("train --learning-rate nan", "--learning-rate"),
    ("train --steps 1.5", "--steps"),
    ("train --steps 0", "steps"),  # the range is RLConfig's to check: one source of truth
    ("train --trace-steps 1,a", "--trace-steps"),
    ("train --config {config}", "scale_rewards"),
    ("curves {torn}", "metrics.jsonl, line 2"),
    ("curves {tmp}/nope", "no metrics.jsonl"),
    ("compare --bogus", "unrecognized arguments"),
    ("compare --model {model}", "model.safetensors"),
]


@pytest.mark.parametrize("line, word", BAD, ids=[line for line, _ in BAD])
def test_bad_command_line_is_one_error_line(line, word, paths, capsys):
    import shlex

    if "{model}" in line:
        paths["model"] = truncated_model(paths["tmp"] / "damaged")
    argv = shlex.split(line.format(**paths))
    code, _, err = run_cli(argv, capsys)
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"softviz {argv[0]}: error: "), err
    assert word in lines[0] and "Traceback" not in err


def test_devices_this_machine_lacks_are_refused(capsys):
    missing = [d for d, ok in (("cuda", torch.cuda.is_available()), ("mps", torch.backends.mps.is_available()))
               if not ok]
    for device in missing + ["cuda:99"]:
        code, _, err = run_cli(["compare", "--device", device], capsys)
        assert code == 2 and err.count("\n") == 1 and f"device = {device!r} is invalid" in err
        assert "allowed here: cpu" in err


def test_torn_last_line_is_skipped_with_a_note(paths, capsys):
    # a run killed mid-write leaves its last line torn; the curves of the steps before it are still worth having
    run = paths["run"]
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "rew')
    out = paths["tmp"] / "c.html"
    code, stdout, err = run_cli(["curves", str(run), "--out", str(out)], capsys)
    assert code == 0 and out.is_file() and "wrote" in stdout
    assert "skipped the torn last line 2" in err and "metrics.jsonl" in err


def test_runs_with_the_same_folder_name_keep_both_curves(paths, capsys):
    other = paths["tmp"] / "b" / "run"
    other.mkdir(parents=True)
    shutil.copy(paths["run"] / "metrics.jsonl", other / "metrics.jsonl")
    out = paths["tmp"] / "c.html"
    assert run_cli(["curves", str(paths["run"]), str(other), "--out", str(out)], capsys)[0] == 0
    html = out.read_text()  # the legend names the runs by their paths as given (plotly writes "/" as \u002f)
    for folder in (paths["run"], other):
        assert '"name":"' + str(folder).replace("/", "\\u002f") + '"' in html


@pytest.mark.parametrize("text, value", [("true", True), ("TRUE", True), ("1", True), ("Yes", True),
                                         ("false", False), ("False", False), ("0", False), ("no", False)])
def test_booleans_are_parsed_strictly(text, value):
    from softviz.cli_args import _bool

    assert _bool(text) is value


def test_os_errors_name_the_path(monkeypatch, capsys):
    def fail(args):
        raise PermissionError(13, "Permission denied", "/runs/x/checkpoint.pt")

    monkeypatch.setattr(cli, "cmd_curves", fail)
    code, _, err = run_cli(["curves", "anything"], capsys)
    assert (code, err) == (2, "softviz curves: error: /runs/x/checkpoint.pt: Permission denied\n")


def test_ctrl_c_is_a_short_note(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_train", interrupted)
    code, _, err = run_cli(["train"], capsys)
    assert code == 130 and err.count("\n") == 1 and err.startswith("softviz train: interrupted.")


def test_a_bug_keeps_its_traceback(monkeypatch):
    def bug(args):
        raise RuntimeError("a bug in softviz")

    monkeypatch.setattr(cli, "cmd_curves", bug)
    with pytest.raises(RuntimeError, match="a bug in softviz"):
        main(["curves", "anything"])


def test_eval_k_defaults_to_1_and_n_and_greedy_modes_report_pass_at_1(tmp_path, capsys):
    path = tmp_path / "eval.json"
    short = ["--problems", "1", "--max-cot-tokens", "8", "--max-answer-tokens", "4", "--json", str(path)]
    assert main(["eval", "--modes", "hard-greedy,hard", "-n", "2", *short]) == 0
    assert [list(r["pass_at"]) for r in json.loads(path.read_text())["results"]] == [["1"], ["1", "2"]]
    # k > n is no error when every mode is greedy (one sample each): they report pass@1 only
    assert main(["eval", "--modes", "hard-greedy", "-k", "1,64", "-n", "2", *short]) == 0


@pytest.mark.parametrize("line, word", [("compare --example -1", "--example"),
                                        ("eval --device tpu --json {file}/out.json", "'tpu'"),
                                        ("eval --json {file}/out.json", "somefile.txt")])
def test_no_traceback_reaches_the_terminal(line, word, paths):
    import shlex

    argv = shlex.split(line.format(**paths))
    root = Path(cli.__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "softviz.cli", *argv], capture_output=True, text=True, timeout=120,
                          cwd=root)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()] and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"softviz {argv[0]}: error: ") and word in done.stderr


@pytest.mark.parametrize("argv, needle", [
    (["app", "--port", "x"], "--port"),
    (["app", "--max-rollouts", "0"], "max_rollouts = 0"),
    (["app", "--max-rollouts", "many"], "--max-rollouts"),
])
def test_app_flags_are_one_line_errors(argv, needle, capsys):
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.startswith("softviz app: error:") and needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
