"""The Gradio app: host settings, every handler called directly with the embedded model, and the launched app
driven through gradio_client (two clients = two visitors, whose fine-tuned models stay apart)."""

import os
import re
import sys
from pathlib import Path

import pytest
import torch

gr = pytest.importorskip("gradio")

from softviz import analysis  # noqa: E402

APP_FILE = Path(__file__).resolve().parents[1] / "app" / "app.py"  # the entry a Space runs: `python app.py`


@pytest.fixture(scope="module")
def app():
    import softviz.app

    return softviz.app


@pytest.fixture(scope="module")
def settings(app):
    return app.Settings()


@pytest.fixture(scope="module")
def problem(app):
    return app.first_problem()


@pytest.fixture(scope="module")
def compared(app, settings, problem):
    """One default comparison (hard, soft, fuzzy x 8) in a fresh session: (session, on_compare's two CompareViews)."""
    session = app.Session()
    first, out = app.on_compare("embedded", problem[0], problem[1], ["hard", "soft", "fuzzy"], 8, 0.5, 1.0, 0.33,
                                96, 0, False, settings, session)
    return session, first, out


def last(updates):
    """The final update of a streaming handler (what a gradio_client predict returns)."""
    return list(updates)[-1]


def is_figure(x) -> bool:
    import plotly.graph_objects as go

    return isinstance(x, go.Figure) and len(x.data) > 0


# ---- settings ----------------------------------------------------------------------------------------------

def test_settings_come_from_flags_then_environment_then_defaults(app):
    env = {"SOFTVIZ_MODELS": "embedded, Qwen/Qwen2.5-0.5B-Instruct", "SOFTVIZ_MAX_ROLLOUTS": "16",
           "SOFTVIZ_MAX_MODES": "3"}
    s, args = app.parse_args(["--max-rollouts", "4", "--share", "--port", "7999"], environ=env)
    assert s.models == ("embedded", "Qwen/Qwen2.5-0.5B-Instruct")
    assert (s.max_rollouts, s.max_modes, s.max_cot_tokens) == (4, 3, app.Settings().max_cot_tokens)
    assert args.share and args.port == 7999
    s, _ = app.parse_args(["--models", "a,b,a"], environ={})
    assert s.models == ("a", "b")  # duplicates dropped, order kept
    with pytest.raises(ValueError, match="max_rollouts"):
        app.Settings.from_env({"SOFTVIZ_MAX_ROLLOUTS": "0"})
    with pytest.raises(ValueError, match="integer"):
        app.Settings.from_env({"SOFTVIZ_MAX_ROLLOUTS": "many"})
    with pytest.raises(ValueError, match="empty"):
        app.Settings(models=())


def test_only_allow_listed_models_load(app, settings):
    model, tok = app.get_model("embedded", settings)
    assert app.get_model("embedded", settings)[0] is model  # loaded once, shared read-only
    for name in ("/etc", "../softviz/assets/embedded", "gpt2"):
        with pytest.raises(ValueError, match="not offered here"):
            app.get_model(name, settings)


def test_build_demo_exposes_the_handlers_by_name(app, settings):
    demo = app.build_demo(settings)
    names = {d.api_name for d in demo.fns.values() if d.api_name}
    assert {"compare", "random_problem", "rollout", "train", "cancel", "open_trace", "pick_trace", "explore_rollout",
            "explore_step", "export"} <= names
    demo.close()


# ---- Compare -----------------------------------------------------------------------------------------------

def test_random_problem_is_a_test_problem_with_its_answer(app):
    from softviz.tasks import get_task

    question, gold = app.random_problem()
    task = get_task("arithmetic")
    golds = {task.example("test", i).question: task.example("test", i).answer for i in range(2000)}
    assert golds[question] == gold


def test_build_modes_applies_tau_and_gamma_where_they_belong(app):
    hard, soft, fuzzy, greedy = app.build_modes(["hard", "soft", "fuzzy", "hard-greedy"], 0.7, 0.8, 0.5)
    assert (hard.cot_temperature, hard.noise_scale) == (0.8, 0.0)
    assert (soft.cot_temperature, soft.noise_scale) == (0.7, 0.5)
    assert (fuzzy.cot_temperature, fuzzy.noise_scale) == (1e-4, 0.5)  # fuzzy keeps its τ: that is what it is
    assert greedy.cot_temperature == 0.0
    with pytest.raises(ValueError, match="unknown mode"):
        app.build_modes(["warm"], 0.5, 1.0, 0.33)


def test_compare_fills_one_column_per_mode(app, settings, compared):
    from softviz import Trace

    session, first, out = compared
    # the first update already shows answers, shadow texts and entropy; the last is whole, with every figure
    assert first.summary == out.summary and first.across.flat() == [None] * 4
    assert (first.slots[0].header.startswith("### hard") and is_figure(first.slots[0].entropy_heatmap)
            and first.slots[0].rollout.mixture is None)
    assert first.slots[0].entropy_heatmap is out.slots[0].entropy_heatmap  # built once
    summary, shared, slots = out.summary, out.across, out.slots
    rollout_slider, explore_pick, state = out.rollout_slider, out.explore_menu, out.session
    assert len(slots) == settings.max_modes
    assert "| hard |" in summary and "| fuzzy |" in summary and "Gold answer" in summary
    assert all(is_figure(f) for f in shared.flat())  # entropy profiles, diversity, projection, pass@k
    for i, slot in enumerate(slots):
        column, header, shadow, heat, download = (slot.column, slot.header, slot.shadow_text, slot.entropy_heatmap,
                                                  slot.download)
        soft_text, mixture, noise = slot.rollout.soft_text, slot.rollout.mixture, slot.rollout.noise
        if i < 3:
            label = ["hard", "soft", "fuzzy"][i]
            assert column.visible and header.startswith(f"### {label}") and "correct" in header
            assert shadow[0][0].startswith("#0 → ") and any(isinstance(s, float) for _, s in shadow)
            assert sum(tok.startswith(("\n#", "#")) for tok, s in shadow if s is None) == 8  # one line per rollout
            assert all(0.0 <= s <= 1.0 for _, s in shadow if s is not None)
            assert is_figure(heat) and is_figure(mixture) and is_figure(noise) and "Soft text" in soft_text
            path = download.value["path"] if isinstance(download.value, dict) else download.value
            assert download.visible and Trace.load(path).meta["mode_label"] == label
        else:
            assert column.visible is False
    assert explore_pick.choices == [("hard", "hard"), ("soft", "soft"), ("fuzzy", "fuzzy")]
    assert rollout_slider.maximum == 7 and state is session
    trace = session.compare["traces"]["soft"]
    assert trace.inputs is not None and session.compare["gold"] and trace.meta["golds"] == [session.compare["gold"]] * 8 and len(trace.meta["correct"]) == 8


def test_an_api_client_reads_the_same_view_by_name(app, compared):
    """An API client gets the handler's flat() less the values Gradio never sends (a column is layout, a button
    has no value, the session is a gr.State): CompareView.from_api puts the names back, and the rest is the handler's view."""
    session, _, out = compared
    unsent = lambda v: (isinstance(v, (gr.Column, app.Session))  # noqa: E731
                        or type(v) is gr.Button)  # a button (the out-of-reach note's) sends no value either
    back = app.CompareView.from_api([v for v in out.flat() if not unsent(v)])
    assert len(back.slots) == len(out.slots) and back.slots[2].header == out.slots[2].header
    assert back.flat() == [None if unsent(v) else v for v in out.flat()]
    with pytest.raises(ValueError):
        app.CompareView.from_api([v for v in out.flat() if not unsent(v)][1:])


def test_export_offers_the_comparison_as_an_offline_page_and_json(app, settings, compared):
    import json

    with pytest.raises(gr.Error, match="press Compare first"):
        app.on_export(settings, app.Session())
    session, _, out = compared
    update = app.on_export(settings, session)
    html, js = (Path(p) for p in update["value"])
    assert update["visible"] and html.suffix == ".html" and js.suffix == ".json"
    assert html.parent == js.parent == session.files()  # removed with the session
    data = json.loads(js.read_text())
    assert data["settings"]["seed"] == 0 and data["settings"]["modes"] == ["hard", "soft", "fuzzy"]
    assert data["prompt"] == session.compare["prompt"]
    for m in data["modes"]:
        assert [r["answer"] for r in m["rollouts"]] == session.compare["traces"][m["label"]].meta["answers"]
    page = html.read_text()
    assert page.count('class="plotly-graph-div"') == 4 and page.count("<h3>rollout 7</h3>") == 3


def test_compare_replays_with_the_same_seed(app, settings, problem, compared):
    session = compared[0]
    again = app.compare("embedded", problem[0], problem[1], ["soft"], 8, 0.5, 1.0, 0.33, 96, 0, False, settings,
                        app.Session())
    assert again["traces"]["soft"].meta["answers"] == session.compare["traces"]["soft"].meta["answers"]


def test_a_typed_question_is_answered(app, settings):
    """What a new user types first: "What is 17 times 3?" (held out of the model's training in every wording),
    hard-greedy -> 51, shown right against the gold answer typed beside it."""
    out = last(app.on_compare("embedded", "What is 17 times 3?", "51", ["hard-greedy"], 1, 0.5, 1.0, 0.33, 64, 0,
                              False, settings, app.Session()))
    trace = out.session.compare["traces"]["hard-greedy"]
    assert trace.meta["answers"] == ["51"] and trace.meta["correct"] == [True]
    assert "51" in out.slots[0].header and "User: What is 17 times 3? Assistant:" in trace.meta["prompts"]


def test_words_out_of_the_embedded_models_reach_are_named_and_a_real_model_offered(app, settings):
    ask = ("What is the capital of France?", "", ["hard-greedy"], 1, 0.5, 1.0, 0.33, 32, 0, False)
    alone = app.Settings(models=("embedded",))
    out = last(app.on_compare("embedded", *ask, alone, app.Session()))
    assert out.reach.visible and "'capital', 'France'" in out.reach.value and "17 times 3" in out.reach.value
    assert not out.reach_button.visible and "real language model" not in out.reach.value  # none offered here
    offered = app.Settings(models=("embedded", "smollm2"))
    out = last(app.on_compare("embedded", *ask, offered, app.Session()))
    assert out.reach_button.visible and "smollm2" in out.reach.value
    fine = last(app.on_compare("embedded", "What is 17 times 3?", "51", ["hard-greedy"], 1, 0.5, 1.0, 0.33, 32, 0,
                               False, offered, app.Session()))
    assert not fine.reach.visible and not fine.reach_button.visible


def test_example_gallery_holds_each_family(app):
    examples = app.example_problems()
    assert [label.split(":")[0] for label in examples] == ["story"] * 3 + ["plain"] * 3 + ["puzzle"] * 3
    label, problem = next((k, v) for k, v in examples.items() if k.startswith("plain"))
    assert app.pick_example(label) == problem and label.endswith(problem.question)
    with pytest.raises(gr.Error, match="example problems"):
        app.pick_example("nope")


def test_a_compare_that_fails_clears_the_previous_results(app, settings, problem):
    session = app.Session()
    run = app.on_compare("embedded", "   ", "", ["hard"], 2, 0.5, 1.0, 0.33, 16, 0, False, settings, session)
    cleared = next(run)  # first the result area is cleared, then the message
    assert cleared.session is session  # the visitor keeps their session (a None would reset the page's state)
    assert cleared.summary.startswith("**Not run:** type a problem")
    assert all(not slot.column.visible for slot in cleared.slots) and cleared.across.profiles is None
    with pytest.raises(gr.Error, match="type a problem"):
        next(run)


def test_deterministic_modes_say_their_rollouts_are_identical(app, settings):
    out = last(app.on_compare("embedded", "What is 17 times 3?", "51", ["hard-greedy", "soft"], 3, 0.5, 1.0, 0.33, 64,
                              0, False, settings, app.Session()))
    assert "Deterministic: all 3 rollouts are identical" in out.slots[0].header
    assert "Deterministic" not in out.slots[1].header  # soft rollouts draw noise, even when they agree
    session = out.session
    app.on_pick("soft", session)
    text = app.on_explore_rollout(0, 2, session).step.text
    assert "entropy of p at τ = 1" in text and "the weights below are the mode's, at τ = 0.5" in text


def test_rollout_slider_redraws_the_per_rollout_figures(app, settings, compared):
    session = compared[0]
    out = app.on_rollout(3, settings, session)
    assert len(out) == settings.max_modes  # a RolloutView per column
    soft_text, mixture, noise = out[0].soft_text, out[0].mixture, out[0].noise
    assert "rollout 3" in soft_text and is_figure(mixture) and is_figure(noise)
    assert [view.flat() for view in out[3:]] == [["", None, None]] * (settings.max_modes - 3)


@pytest.mark.parametrize("change, message", [
    (dict(n=1000), "between 1 and 32"),
    (dict(max_cot_tokens=10_000), "between 1 and 128"),
    (dict(mode_names=[]), "at least one mode"),
    (dict(mode_names=["hard", "soft", "fuzzy", "hard-greedy", "soft-greedy", "fuzzy-greedy", "gumbel"]), "at most 6"),
    (dict(question="  "), "type a problem"),
    (dict(question="x" * 3000), "accepts 2000"),
    (dict(model_name="/etc/passwd"), "not offered here"),
    (dict(use_finetuned=True), "Train tab first"),
    (dict(gamma=-1), "γ must be between"),
    (dict(n="eight"), "whole number"),
])
def test_a_visitors_mistake_is_a_readable_message(app, settings, problem, change, message):
    args = dict(model_name="embedded", question=problem[0], gold=problem[1], mode_names=["hard"], n=2, soft_tau=0.5,
                hard_tau=1.0, gamma=0.33, max_cot_tokens=16, seed=0, use_finetuned=False)
    args.update(change)
    with pytest.raises(gr.Error, match=message):
        last(app.on_compare(*args.values(), settings, app.Session()))


def test_host_limits_are_enforced_on_the_server(app, problem):
    small = app.Settings(max_rollouts=2, max_modes=1, max_cot_tokens=8)
    with pytest.raises(gr.Error, match="between 1 and 2"):
        last(app.on_compare("embedded", problem[0], "", ["hard"], 3, 0.5, 1.0, 0.33, 8, 0, False, small,
                            app.Session()))
    with pytest.raises(gr.Error, match="at most 1"):
        last(app.on_compare("embedded", problem[0], "", ["hard", "soft"], 2, 0.5, 1.0, 0.33, 8, 0, False, small,
                            app.Session()))
    with pytest.raises(gr.Error, match="this server allows 8"):
        app.on_train("embedded", "hard", "rloo", 1, 1e-4, 4, 4, app.Settings(max_train_rollouts=8),
                     app.Session()).__next__()
    out = last(app.on_compare("embedded", problem[0], "", ["hard"], 2, 0.5, 1.0, 0.33, 8, 0, False, small,
                              app.Session()))
    assert "not given" in out.summary and out.across.pass_at_k is None  # no gold answer: no pass@k, answers unmarked


# ---- Train -------------------------------------------------------------------------------------------------

def test_train_streams_curves_then_before_after_and_never_touches_the_shared_model(app, settings, problem):
    shared, _ = app.get_model("embedded", settings)
    before = {k: v.clone() for k, v in shared.state_dict().items()}
    session = app.Session()
    updates = list(app.on_train("embedded", "hard", "rloo", 2, 1e-3, 4, 2, settings, session))
    assert "Measuring" in updates[0].status
    steps = [u for u in updates[1:-1]]
    assert [f"Step {s} / 2" in u.status for s, u in enumerate(steps)] == [True] * 3  # step-0 validation, then each
    assert 'aria-valuenow="1" aria-valuemax="2"' in steps[1].status and "width:50.0%" in steps[1].status  # the bar
    assert all(is_figure(u.curves) for u in steps[1:])  # live curves
    final = updates[-1]
    assert "Finished after 2 of 2 steps" in final.status and "Before / after" in final.before_after
    assert (is_figure(final.entropy) and len(final.answers) == app.BEFORE_AFTER_PROMPTS
            and final.use_finetuned.interactive)
    assert final.session is session and session.finetuned["config"].steps == 2
    trained = session.finetuned["model"]
    assert trained is not shared
    assert any(not torch.equal(p, before[k]) for k, p in trained.state_dict().items())
    assert all(torch.equal(p, before[k]) for k, p in shared.state_dict().items())
    # the fine-tuned model answers in Compare, for this session only
    out = last(app.on_compare("embedded", problem[0], problem[1], ["hard"], 2, 0.5, 1.0, 0.33, 32, 0, True, settings,
                              session))
    assert "fine-tuned from embedded" in out.summary
    with pytest.raises(gr.Error, match="Train tab first"):
        last(app.on_compare("embedded", problem[0], problem[1], ["hard"], 2, 0.5, 1.0, 0.33, 32, 0, True, settings,
                            app.Session()))


def test_train_soft_grpo_compares_gumbel_rollouts_before_and_after(app, settings):
    session = app.Session()
    updates = list(app.on_train("embedded", "soft-grpo", "rloo", 2, 1e-3, 4, 2, settings, session))
    final = updates[-1]
    assert "Finished after 2 of 2 steps" in final.status and "Before / after" in final.before_after
    cfg = session.finetuned["config"]
    assert cfg.mode == "soft-grpo" and cfg.greedy_mode.kind == "hard"  # validated with argmax tokens
    assert is_figure(final.entropy) and len(final.answers) == app.BEFORE_AFTER_PROMPTS
    assert all("correct" in row[2] and "correct" in row[3] for row in final.answers)


def test_cancel_stops_training_between_steps(app, settings):
    session = app.Session()
    app.on_cancel(session)  # an old Cancel does not stop the next run
    run = app.on_train("embedded", "soft", "grpo", 50, 1e-4, 2, 2, settings, session)
    next(run)  # measuring the starting model
    next(run)  # step 0 (validation)
    next(run)  # step 1
    assert "Stopping" in app.on_cancel(session)
    rest = list(run)
    assert "Cancelled after 1 of 50 steps" in rest[-1].status
    assert session.finetuned is not None  # what was trained so far is kept, and compared before/after
    assert "Before / after" in rest[-1].before_after and not session.training
    assert "Nothing to cancel" in app.on_cancel(session)  # the run is over


def test_cancel_before_the_first_step_leaves_no_fine_tuned_model(app, settings):
    for steps_seen in (1, 2):  # cancelled while measuring the starting model, or after the step-0 validation
        session = app.Session()
        run = app.on_train("embedded", "hard", "rloo", 5, 1e-4, 2, 2, settings, session)
        for _ in range(steps_seen):
            next(run)
        assert session.training and "Stopping" in app.on_cancel(session)
        rest = list(run)
        assert "Cancelled before the first step" in rest[-1].status and "unchanged" in rest[-1].status
        assert "yours" not in rest[-1].status and session.finetuned is None and not session.training


def test_runs_are_kept_side_by_side_overlaid_and_usable_in_compare(app, settings, problem):
    session = app.Session()
    first = list(app.on_train("embedded", "hard", "rloo", 1, 1e-3, 2, 2, settings, session, 0))[-1]
    second = list(app.on_train("embedded", "soft-grpo", "rloo", 1, 1e-3, 2, 2, settings, session, 1))[-1]
    labels = [r["label"] for r in session.runs]
    assert labels == ["#1 hard rloo lr 0.001 seed 0", "#2 soft-grpo rloo lr 0.001 seed 1"]
    assert session.finetuned is session.runs[-1] and session.runs[0]["config"].mode == "hard"
    assert second.runs_menu.choices == [(x, x) for x in labels] or second.runs_menu.choices == labels
    assert second.runs_menu.value == labels[1]
    names = {t.name for t in second.curves.data if t.name}
    assert {labels[0], labels[1]} <= names  # the second run's curves overlay the first's
    assert labels[0] in first.status and labels[1] in second.status
    out = last(app.on_compare("embedded", problem[0], problem[1], ["hard"], 2, 0.5, 1.0, 0.33, 32, 0, True, settings,
                              session, labels[0]))
    assert f"({labels[0]})" in session.compare["traces"]["hard"].meta["model"] and "fine-tuned" in out.summary
    with pytest.raises(gr.Error, match="no fine-tuned run 'nope'"):
        last(app.on_compare("embedded", problem[0], problem[1], ["hard"], 2, 0.5, 1.0, 0.33, 32, 0, True, settings,
                            session, "nope"))
    one = app.Settings(max_runs=1)
    third = list(app.on_train("embedded", "hard", "rloo", 1, 1e-3, 2, 2, one, session, 2))[-1]
    assert [r["label"] for r in session.runs] == ["#3 hard rloo lr 0.001 seed 2"] and "was dropped" in third.status


def test_cancel_with_nothing_running_says_so(app):
    assert "Nothing to cancel" in app.on_cancel(app.Session())


def test_cancel_stops_a_run_still_in_the_queue(app, settings):
    session = app.Session()
    assert "Waiting" in app.on_train_requested("embedded", "hard", "rloo", 5, 1e-4, 2, 2, settings, session)
    assert "Stopping" in app.on_cancel(session)  # Train pressed; the run waits for the trainer
    updates = list(app.on_train("embedded", "hard", "rloo", 5, 1e-4, 2, 2, settings, session))
    assert len(updates) == 1 and "Cancelled before it started." in updates[0].status and session.finetuned is None


def test_invalid_train_settings_are_said_in_the_status_that_stays(app, settings):
    session = app.Session()
    status = app.on_train_requested("embedded", "hard", "rloo", 5, 5.0, 2, 2, settings, session)
    assert "Not started" in status and "learning rate" in status and "Waiting" not in status
    status = app.on_train_requested("embedded", "hard", "rloo", 5, 1e-4, 32, 32, settings, session)
    assert "Not started" in status and "this server allows 64" in status
    assert session.train_requested_at is None and "Nothing to cancel" in app.on_cancel(session)


def test_train_labels_say_what_each_accuracy_measures(app, settings):
    session = app.Session()
    updates = list(app.on_train("embedded", "hard", "rloo", 1, 1e-4, 2, 2, settings, session, 3))
    step0, step1, final = updates[1].status, updates[2].status, updates[-1]
    assert session.finetuned["config"].seed == 3 and session.finetuned["config"].eval_size == app.TRAIN_EVAL_SIZE
    assert "greedy validation (hard-greedy CoT" in step0 and f"of {app.TRAIN_EVAL_SIZE}</div>" in step0
    assert re.search(r"\d+\.\d% \[\d+\.\d–\d+\.\d\] of 256", step0)  # a share, its 95% interval and n
    assert "4 training rollouts (hard CoT, τ = 1, answers sampled at τ = 1)" in step1
    assert "hard CoT, τ = 1, greedy answers" in final.before_after and "of 32** before" in final.before_after


def test_train_defaults_are_the_measured_ones(app):
    import json

    from softviz.app.settings import MEASURED, TRAIN_DEFAULTS

    measured = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results" /
                           "train_defaults.json").read_text())
    assert measured["defaults"] == TRAIN_DEFAULTS and measured["eval_size"] == app.TRAIN_EVAL_SIZE
    assert MEASURED["train_s"] == round(measured["median_seconds"]) and measured["gain_95"][0] > 0
    assert MEASURED["train_gain"] == f"{measured['mean_gain_points']:.0f}"


def test_train_rejects_bad_settings(app, settings):
    for args, message in [(("warm", "rloo", 2, 1e-4, 4, 2), "training mode"),
                          (("soft-greedy", "rloo", 2, 1e-4, 4, 2), "training mode"),
                          (("hard", "ppo", 2, 1e-4, 4, 2), "algorithm"),
                          (("hard", "rloo", 500, 1e-4, 4, 2), "between 1 and 60"),
                          (("hard", "rloo", 2, 5.0, 4, 2), "learning rate"),
                          (("hard", "rloo", 2, 1e-4, 1, 2), "group size")]:
        with pytest.raises(gr.Error, match=message):
            next(app.on_train("embedded", *args, settings, app.Session()))


# ---- Explore -----------------------------------------------------------------------------------------------

def test_explore_opens_an_uploaded_trace_and_walks_it(app, settings, compared, tmp_path):
    session = compared[0]
    path = session.compare["files"]["soft"]
    visitor = app.Session()
    opened = app.on_upload(path, settings, visitor)
    view, step = opened.view, opened.view.step
    rollout, step_slider = opened.rollout_slider, opened.step_slider
    assert opened.summary.startswith("**soft**") and rollout.maximum == 7 and step_slider.maximum >= 1
    assert "Soft text" in view.soft_text and all(is_figure(f) for f in (view.entropy_heatmap, view.mixture, view.noise))
    assert step.text.startswith("**Step 0**") and len(step.table) == 10 and step.table[0][0] == 1
    assert abs(sum(float(row[2]) for row in step.table) - 1.0) < 0.2  # the top-10 weights carry most of the mixture
    view = app.on_explore_rollout(2, 5, visitor)
    assert "rollout 2" in view.soft_text and view.step.text.startswith("**Step 5** of rollout 2")
    step = app.on_explore_rollout(2, 500, visitor).step  # past the end: the last step
    assert step.text.startswith(f"**Step {int(visitor.explore.lengths[2]) - 1}** of rollout 2")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a trace")
    with pytest.raises(gr.Error, match="not a readable softviz trace"):
        app.on_upload(str(junk), settings, app.Session())
    with pytest.raises(gr.Error, match="up to 1 MB"):
        big = tmp_path / "big.safetensors"
        big.write_bytes(b"0" * (2 * 2**20))
        app.on_upload(str(big), app.Settings(max_upload_mb=1), app.Session())
    with pytest.raises(gr.Error, match="open a trace first"):
        app.on_explore_rollout(0, 0, app.Session())


def test_explore_picks_a_mode_of_the_last_comparison(app, compared):
    session = compared[0]
    out = app.on_pick("fuzzy", session)
    assert out.summary.startswith("**fuzzy**") and session.explore is session.compare["traces"]["fuzzy"]
    with pytest.raises(gr.Error, match="run a comparison first"):
        app.on_pick("fuzzy", app.Session())


# ---- sessions ----------------------------------------------------------------------------------------------

def test_closing_a_session_frees_its_model_and_files(app, settings, problem):
    session = app.Session()
    app.compare("embedded", problem[0], problem[1], ["hard"], 2, 0.5, 1.0, 0.33, 16, 0, False, settings, session)
    folder = Path(session.folder)
    assert any(folder.iterdir())
    sessions = app.Sessions()

    class Request:  # what Gradio passes: the browser tab's session hash
        session_hash = "tab-1"

    sessions.bind(session, Request())
    assert len(sessions) == 1
    sessions.close(Request())
    assert len(sessions) == 0 and not folder.exists()
    assert session.closed and session.compare is None and session.finetuned is None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ended_pid() -> int:
    """The pid of a process that has exited (Linux hands it out again only after the pid counter wraps)."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_the_server_deletes_its_files_when_stopped_and_stale_ones_at_start(sig, tmp_path):
    """`python app/app.py` with TMPDIR=tmp_path: at start it deletes the folder of a process that no longer exists
    (as SIGKILL leaves it) and keeps a live one's; a visitor's mistake is one log line; SIGTERM and SIGINT delete
    every visitor's folder and Gradio's copies of the traces."""
    import signal
    import subprocess
    import time
    import urllib.request

    from gradio_client import Client

    stale, live = tmp_path / f"softviz-app-{ended_pid()}-abc123", tmp_path / f"softviz-app-{os.getpid()}-abc123"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "trace-hard-000000.safetensors").write_bytes(b"{}")
    port, log = free_port(), tmp_path / "app.log"
    env = {**os.environ, "TMPDIR": str(tmp_path), "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as out:  # a background job (CI) inherits SIGINT ignored, and the app leaves it so
        proc = subprocess.Popen([sys.executable, str(APP_FILE), "--port", str(port)], env=env, stdout=out,
                                stderr=subprocess.STDOUT,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 180
        while True:  # until the page answers (the model loads and warms up first)
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                time.sleep(0.2)
        assert not stale.exists() and live.exists()
        client = Client(url, verbose=False, download_files=False)
        client.predict("embedded", "Tom has 3 apples. How many apples does Tom have?", "3", ["hard"], 1, 0.5, 1.0,
                       0.33, 8, 0, False, api_name="/compare")
        with pytest.raises(Exception, match="type a problem"):
            client.predict("embedded", " ", "", ["hard"], 1, 0.5, 1.0, 0.33, 8, 0, False, api_name="/compare")
        client.close()
        [visitor] = tmp_path.glob(f"softviz-app-{proc.pid}-*")  # the compare's session folder: one trace
        assert [f.suffix for f in visitor.iterdir()] == [".safetensors"]
        assert [f.suffix for f in (tmp_path / "gradio").rglob("*") if f.is_file()] == [".safetensors"]
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    # SIGTERM's default is to end the process: the app exits with the status a shell shows for it, after cleaning
    # up; SIGINT is Ctrl-C, on which Gradio closes the server and returns
    assert proc.returncode == {"SIGTERM": 128 + signal.SIGTERM, "SIGINT": 0}[sig], text
    assert not visitor.exists() and live.exists(), text
    assert not [f for f in (tmp_path / "gradio").rglob("*") if f.is_file()], text  # delete_cache at shutdown
    mistakes = [line for line in text.splitlines() if "type a problem" in line]
    assert len(mistakes) == 1 and "visitor error in on_compare" in mistakes[0] and "Traceback" not in text, text


# ---- the launched app, through gradio_client ------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(app):
    settings = app.Settings(max_train_steps=4)
    demo = app.build_demo(settings)
    _, url, _ = app.launch(demo, settings, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield url
    demo.close()


def test_client_compares_and_gets_figures(app, served):
    import json

    from gradio_client import Client

    from softviz import Trace

    client = Client(served, verbose=False)
    question, gold = client.predict(api_name="/random_problem")
    out = app.CompareView.from_api(client.predict("embedded", question, gold, ["hard", "soft"], 4, 0.5, 1.0, 0.33,
                                                  64, 0, False, api_name="/compare"))
    assert "| hard |" in out.summary and "| soft |" in out.summary
    profiles = out.across.profiles
    assert profiles["type"] == "plotly" and json.loads(profiles["plot"])["data"]
    header, shadow = out.slots[0].header, out.slots[0].shadow_text  # (its gr.Column is layout: no value is sent)
    assert header.startswith("### hard") and shadow[0]["token"].startswith("#0 → ")
    download = out.slots[0].download
    assert download["visible"] and Trace.load(download["value"]).meta["mode_label"] == "hard"
    client.close()


def test_client_errors_are_readable(served):
    from gradio_client import Client

    client = Client(served, verbose=False)
    with pytest.raises(Exception, match="32"):  # Gradio checks a slider's bounds on the server too
        client.predict("embedded", "Tom has 3 apples. How many apples does Tom have?", "", ["hard"], 999, 0.5, 1.0,
                       0.33, 64, 0, False, api_name="/compare")
    client.close()


def test_client_train_streams_and_stays_in_its_session(app, served):
    from gradio_client import Client

    alice, bob = Client(served, verbose=False), Client(served, verbose=False)
    job = alice.submit("embedded", "hard", "rloo", 2, 1e-3, 2, 2, api_name="/train")
    outputs = list(job)
    assert len(outputs) >= 4 and "Finished after 2 of 2 steps" in app.TrainView.from_api(outputs[-1]).status
    question = "Tom has 3 apples. Tom buys 2 more apples. How many apples does Tom have now?"
    out = alice.predict("embedded", question, "5", ["hard"], 2, 0.5, 1.0, 0.33, 32, 0, True, api_name="/compare")
    assert "fine-tuned from embedded" in app.CompareView.from_api(out).summary
    with pytest.raises(Exception, match="Train tab first"):  # Bob never trained: Alice's model is not his
        bob.predict("embedded", question, "5", ["hard"], 2, 0.5, 1.0, 0.33, 32, 0, True, api_name="/compare")
    with pytest.raises(Exception, match="maximum value 4"):  # this host allows 4 steps
        bob.predict("embedded", "hard", "rloo", 5, 1e-3, 2, 2, api_name="/train")
    alice.close()
    bob.close()


# ---- hosting -----------------------------------------------------------------------------------------------

def test_the_app_folder_is_a_space(tmp_path):
    import subprocess

    import yaml

    text = (APP_FILE.parent / "README.md").read_text()
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["sdk"] == "gradio" and header["sdk_version"] == gr.__version__ and header["app_file"] == "app.py"
    assert len(header["short_description"]) <= 60  # the Hub's limit
    reqs = (APP_FILE.parent / "requirements.txt").read_text()
    assert "torch==" in reqs and "plotly==" in reqs and "gradio" not in reqs.replace("gradio itself", "")

    build = [sys.executable, str(APP_FILE.parent / "build_space.py")]
    space = tmp_path / "space"
    done = subprocess.run([*build, str(space)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in space.iterdir()} == {"app.py", "README.md", "requirements.txt", "softviz"}
    assert (space / "softviz" / "assets" / "embedded" / "config.json").is_file()
    # run from the Space's folder, app.py imports the copied package (not the one installed here)
    code = ("import sys, app, softviz; "
            "print(softviz.__file__, app.main.__module__, sys.modules[app.main.__module__].__file__)")
    probe = subprocess.run([sys.executable, "-c", code], cwd=space, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": ""})
    assert probe.returncode == 0, probe.stderr
    package, module, path = probe.stdout.split()
    assert package.startswith(str(space)) and module == "softviz.app.serve" and path.startswith(str(space))
    refused = subprocess.run([*build, str(APP_FILE.parents[1])], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "refusing" in refused.stderr and "Traceback" not in refused.stderr


def test_selecting_a_step_redraws_its_column_and_opens_explore_there(app, settings, compared):
    session = compared[0]
    traces = session.compare["traces"]
    view = app.on_cell("1:2:3:1700000000", settings, session)  # soft's heatmap, rollout 2, step 3
    assert session.selection == {"mode": "soft", "rollout": 2, "step": 3}
    assert view.note.value.startswith("**Selected:** soft, rollout 2, step 3 of ")
    assert view.rollout_slider.value == 2 and view.explore_menu.value == "soft"
    soft = view.slots[1]
    assert [s.name for s in soft.entropy_heatmap.layout.shapes] == ["selected"]
    assert "red outline = step 3" in soft.rollout.soft_text and "rollout 2 (answer" in soft.rollout.soft_text
    for other in (view.slots[0], view.slots[2]):  # the other columns show rollout 2, nothing marked
        assert not other.entropy_heatmap.layout.shapes and "red outline" not in other.rollout.soft_text
        assert "rollout 2 (answer" in other.rollout.soft_text
    assert session.explore is traces["soft"] and view.explore.view.step.text.startswith("**Step 3** of rollout 2")
    # where rollout 2 first splits from rollout 0, and from the other modes' rollout 2, as the library says
    s = analysis.first_split(traces["soft"], 2, traces["soft"], 0)
    assert ("the same shadow tokens all along" if s is None else f"first split at **step {s}**") in view.note.value
    s = analysis.first_split(traces["soft"], 2, traces["hard"], 2)
    assert (f"hard splits at step {s}" if s is not None else "hard: the same shadow tokens") in view.note.value
    with pytest.raises(gr.Error, match="column:rollout:step"):
        app.on_cell("soft", settings, session)
    with pytest.raises(gr.Error, match="press Compare first"):
        app.on_cell("0:0:0", settings, app.Session())


def test_branch_point_buttons_walk_the_library_positions(app, settings, compared):
    session = compared[0]
    session.selection = None
    hard = session.compare["traces"]["hard"]
    positions = analysis.branch_points(hard)["positions"]
    assert len(positions) >= 3  # the default problem: hard sampling branches
    seen = []
    for _ in range(3):
        view = app.on_next_branch(0, settings, session)
        seen.append((session.selection["rollout"], session.selection["step"]))
        assert "**branch point**" in view.note.value
    assert seen == positions[:3]
    app.on_previous_branch(0, settings, session)
    assert (session.selection["rollout"], session.selection["step"]) == positions[1]
    session.selection = {"mode": "hard", **dict(zip(("rollout", "step"), positions[-1]))}
    app.on_next_branch(0, settings, session)  # past the last one: around to the first
    assert (session.selection["rollout"], session.selection["step"]) == positions[0]



def test_rollout_figures_are_drawn_once_per_comparison(app, settings, problem):
    from softviz.app.compare_tab import _AHEAD, draw_neighbours
    from softviz.app.views import rollout_figures

    session = app.Session()
    list(app.on_compare("embedded", problem[0], problem[1], ["hard", "soft"], 4, 0.5, 1.0, 0.33, 32, 0, False,
                        settings, session))
    result = session.compare
    assert set(result["figures"]) == {("hard", 0), ("soft", 0)}  # rollout 0's, from the comparison itself
    views = app.on_rollout(2, settings, session)
    drawn = {(m, b) for m in ("hard", "soft") for b in (0, 2)}
    assert drawn <= set(result["figures"]) <= drawn | {(m, b) for m in ("hard", "soft") for b in (1, 3)}
    for view, label in zip(views, ("hard", "soft")):
        fresh = rollout_figures(result["traces"][label], 2)
        assert view.soft_text == fresh.soft_text
        assert view.mixture.to_json() == fresh.mixture.to_json() and view.noise.to_json() == fresh.noise.to_json()
    assert app.on_rollout(2, settings, session)[0] is views[0]  # kept: sent again, not drawn again
    _AHEAD.submit(lambda: None).result()  # the draw-ahead thread has drawn the neighbours, rollouts 1 and 3
    assert set(result["figures"]) == {(m, b) for m in ("hard", "soft") for b in (0, 1, 2, 3)}
    for label in ("hard", "soft"):
        ahead = result["figures"][(label, 3)]
        assert ahead.mixture.to_json() == rollout_figures(result["traces"][label], 3).mixture.to_json()
    assert app.on_rollout(3, settings, session)[0] is result["figures"][("hard", 3)]  # drawn ahead: only sent
    _AHEAD.submit(lambda: None).result()
    for key in [("hard", 0), ("soft", 0)]:
        del result["figures"][key]
    change = session.rollout_changes
    draw_neighbours(session, result, 1, change - 1, delay=0)  # the visitor has changed rollout since: nothing
    assert ("hard", 0) not in result["figures"]
    session.compare = {"traces": {}}  # the visitor's next comparison: nothing more is drawn for the last one
    draw_neighbours(session, result, 1, change, delay=0)
    assert ("hard", 0) not in result["figures"] and ("soft", 0) not in result["figures"]
    session.compare = result
    draw_neighbours(session, result, 1, change, delay=0)
    assert ("hard", 0) in result["figures"] and ("soft", 2) in result["figures"]
    assert views[2].soft_text == "" and views[2].mixture is None  # unused columns stay blank
    session.close()


def test_column_figures_have_fixed_margins_wide_enough_for_their_labels(app, compared):
    """A column's figures are drawn with margins set here, not by plotly's automargin (which draws each twice); the
    left margin fits the heatmap's longest rollout label, and the top one the gr.Plot label and the title."""
    from softviz.app.views import heatmap, label_room, rollout_figures

    trace = next(iter(compared[0].compare["traces"].values()))
    view = rollout_figures(trace, 1)
    heat = heatmap(trace, 1.0)
    for fig in (view.mixture, view.noise, heat):
        axes = {k: v for k, v in fig.layout.to_plotly_json().items() if k.startswith(("xaxis", "yaxis"))}
        assert axes and all(v.get("automargin") is False for v in axes.values())
        assert fig.layout.margin.t >= label_room(fig.layout.title.text, fig.layout.title.pad.b)
        assert fig.layout.title.font.size == 13 and fig.layout.autosize and fig.layout.width is None
    longest = max(len(t) for t in heat.layout.yaxis.ticktext)  # "7: 120 ✓"
    assert heat.layout.margin.l == 30 + 7 * longest and view.mixture.layout.margin.l == 30 + 7 * 4
    assert "<br>" in view.mixture.layout.title.text and view.mixture.layout.showlegend is False


def test_branch_buttons_say_so_when_there_is_nothing_to_step_to(app, settings, compared, monkeypatch):
    with pytest.raises(gr.Error, match="press Compare first"):
        app.on_next_branch(0, settings, app.Session())
    session = compared[0]
    session.selection = None
    real = analysis.branch_points
    monkeypatch.setattr(analysis, "branch_points", lambda tr: {**real(tr), "positions": []})
    with pytest.raises(gr.Error, match="hard has no branch points: every step's entropy is at most 0.672 nats"):
        app.on_previous_branch(0, settings, session)
