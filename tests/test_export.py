"""Comparisons as files: the JSON holds every rollout as generated, the HTML page holds the figures, every rollout's
soft text and the settings, and opens offline; `softviz compare` writes both and the Traces."""

import json
import os
import re
import shutil

import pytest
import torch

from softviz.compare import compare_modes
from softviz.export import comparison_dict, comparison_html, write_comparison
from softviz.tasks import ArithmeticTask
from softviz.trace import Trace

TASK = ArithmeticTask()
CHROMIUM = os.environ.get("SOFTVIZ_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def comparison(embedded):
    model, tok = embedded
    ex = TASK.examples("test", 1, start=3)[0]
    return compare_modes(model, tok, TASK, ex.question, ["hard", "soft", "fuzzy"], n=3, gold=ex.answer, seed=2,
                         max_cot_tokens=48, trace=True)


def test_json_holds_every_rollout_as_generated(comparison):
    data = json.loads(json.dumps(comparison_dict(comparison, {"seed": 2, "model": "embedded"})))
    assert data["format"] == "softviz-comparison/1" and data["settings"] == {"seed": 2, "model": "embedded"}
    assert data["prompt"] == comparison.prompt and data["gold"] == comparison.gold
    assert [m["label"] for m in data["modes"]] == ["hard", "soft", "fuzzy"]
    for m, s in zip(data["modes"], comparison.summaries):
        r = s.rollouts
        assert m["mode"]["cot_temperature"] == r.mode.cot_temperature and m["sigma"] == pytest.approx(r.sigma)
        assert m["accuracy"] == pytest.approx(s.accuracy) and m["distinct_answers"] == s.distinct_answers
        assert [x["answer"] for x in m["rollouts"]] == r.answers
        assert [x["cot_text"] for x in m["rollouts"]] == r.cot_texts
        assert [x["correct"] for x in m["rollouts"]] == [TASK.is_correct(a, comparison.gold) for a in r.answers]
        for b, x in enumerate(m["rollouts"]):
            T = int(r.cot_lengths[b])
            assert x["cot_length"] == T and len(x["entropy"]) == T == len(x["top_weights"])
            assert torch.allclose(torch.tensor(x["entropy"]), r.cot_entropy[b, :T], atol=1e-4)
            assert x["top_ids"][0] == r.trace.topk_ids[b, 0].tolist()


def test_html_page_holds_figures_texts_settings_and_data(comparison):
    page = comparison_html(comparison, {"seed": 2, "note": "<b>not markup</b>"})
    assert not re.search(r"<script[^>]*\ssrc=", page)  # plotly.js is inlined: the page opens offline
    assert len(page) > 3_000_000  # ... because it holds plotly.js itself
    assert page.count('class="plotly-graph-div"') == 4
    assert all(page.count(f"<h3>rollout {b}</h3>") == 3 for b in range(3))  # every rollout's soft text, per mode
    assert "&lt;b&gt;not markup&lt;/b&gt;" in page and "<b>not markup</b>" not in page
    blob = re.search(r"<script type='application/json' id='softviz-data'>(.*?)</script>", page, re.S).group(1)
    assert json.loads(blob.replace("<\\/", "</")) == json.loads(json.dumps(comparison_dict(comparison, {
        "seed": 2, "note": "<b>not markup</b>"})))


def test_writing_checks_the_name_and_writes_whole_files(comparison, embedded, tmp_path):
    with pytest.raises(ValueError, match=r"\.html .*or \.json"):
        write_comparison(comparison, tmp_path / "out.txt")
    with pytest.raises(ValueError, match="does not exist"):
        write_comparison(comparison, tmp_path / "missing" / "out.json")
    out = write_comparison(comparison, tmp_path / "out.json", {"seed": 2})
    assert json.loads(out.read_text())["modes"][1]["label"] == "soft"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary file left behind
    no_trace = compare_modes(*embedded, TASK, "What is 2 plus 2?", ["hard"], n=1)
    with pytest.raises(ValueError, match="trace=True"):
        comparison_html(no_trace)


def test_cli_compare_prints_rollouts_and_writes_html_json_and_traces(tmp_path, capsys):
    from softviz.cli import main

    rc = main(["compare", "--prompt", "What is 17 times 3?", "-n", "2", "--modes", "hard,soft",
               "--html", str(tmp_path / "c.html"), "--json", str(tmp_path / "c.json"),
               "--save-trace", str(tmp_path / "traces")])
    out = capsys.readouterr().out
    assert rc == 0
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["settings"]["modes"] == ["hard", "soft"] and data["settings"]["n"] == 2
    for m in data["modes"]:
        for b, x in enumerate(m["rollouts"]):
            assert f"[{b}] {x['cot_text'].strip()}" in out and f"-> {x['answer']}" in out
    assert (tmp_path / "c.html").read_text().count('class="plotly-graph-div"') == 4
    saved = sorted((tmp_path / "traces").iterdir())
    assert [p.name for p in saved] == ["0_hard.safetensors", "1_soft.safetensors"]
    soft = Trace.load(saved[1])
    assert soft.meta["mode_label"] == "soft" and soft.entropy.shape[0] == 2
    assert torch.allclose(soft["entropy"][0, :len(data["modes"][1]["rollouts"][0]["entropy"])],
                          torch.tensor(data["modes"][1]["rollouts"][0]["entropy"]), atol=1e-4)


def test_cli_compare_refuses_bad_output_names_before_any_work(tmp_path, capsys):
    from softviz.cli import main

    assert main(["compare", "--html", str(tmp_path / "c.txt")]) == 2
    err = capsys.readouterr().err
    assert "--html" in err and "must end in .html or .htm" in err  # the message names the flag and the fix
    (tmp_path / "f").write_text("a file")
    assert main(["compare", "--save-trace", str(tmp_path / "f")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # nothing was written


@pytest.mark.skipif(not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)),
                    reason=f"no Chromium at {CHROMIUM}: install Debian's chromium or set SOFTVIZ_CHROMIUM")
def test_exported_page_draws_its_figures_offline_in_a_browser(comparison, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    path = write_comparison(comparison, tmp_path / "c.html", {"seed": 2})
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            page = browser.new_page()
            asked = []
            page.route("**/*", lambda route: (asked.append(route.request.url), route.abort())
                       if not route.request.url.startswith("file:") else route.continue_())
            page.goto(path.as_uri())
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 4",
                                   timeout=30_000)
            assert page.locator(".js-plotly-plot").count() == 4
            assert asked == []  # nothing outside the file was requested
        finally:
            browser.close()
