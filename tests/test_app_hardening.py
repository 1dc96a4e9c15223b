"""Bad input through the app: every handler called directly with empty, whitespace-only, over-long and non-ASCII
problems, out-of-range, NaN, infinite and fractional numbers, unknown modes and models, and damaged, empty, foreign
and over-size Trace files; then a few through gradio_client and raw HTTP. Each must end in a readable message that
names the problem and what is allowed (never a stack trace or "Something went wrong"), and leave nothing half
written in the visitor's session: no trace folder, no kept result. Non-ASCII problems must work."""

import json
import logging
import math
import os
import sys
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")
sys.path.insert(0, str(Path(__file__).parent))
import test_app  # noqa: E402
from test_app import is_figure, last  # noqa: E402

app, problem, settings = test_app.app, test_app.problem, test_app.settings  # test_app's fixtures, shared

NAN, INF = math.nan, math.inf
NON_ASCII = "Combien font 3 + 4 ? 数字 🙂"
UNREADABLE = ("Traceback", 'File "', "Something went wrong", "invalid literal", "NoneType", "cannot convert")


@pytest.fixture
def sessions(app):
    """Fresh Sessions for a test, closed afterwards (their trace folders deleted)."""
    made = []

    def make():
        made.append(app.Session())
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture(autouse=True)
def no_unexpected_errors(caplog):
    """A visitor's mistake is expected: the app must not log it as an unexpected server error."""
    with caplog.at_level(logging.ERROR, logger="softviz.app"):
        yield
    # caplog.records would be this teardown's (pytest keeps each phase's records apart): look at the test's own
    errors = [r for r in caplog.get_records("call") if r.name == "softviz.app" and r.levelno >= logging.ERROR]
    assert not errors, caplog.text


def assert_readable(message: str, *needles: str) -> None:
    assert message and not any(u in message for u in UNREADABLE), message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def compare_inputs(problem, **change) -> dict:
    """/compare's inputs by name, in the order the handler (and an API client) takes them."""
    args = dict(model_name="embedded", question=problem[0], gold=problem[1], mode_names=["hard"], n=2, soft_tau=0.5,
                hard_tau=1.0, gamma=0.33, max_cot_tokens=16, seed=0, use_finetuned=False)
    args.update(change)
    return args


def compare_args(problem, **change) -> list:
    return list(compare_inputs(problem, **change).values())


def files_in(session) -> list[str]:
    return sorted(os.listdir(session.folder)) if session.folder else []


# ---- Compare -----------------------------------------------------------------------------------------------

WHOLE = "must be a whole number between"
COMPARE_CASES = [
    # the problem and its gold answer
    (dict(question=""), ["type a problem", "Random problem"]),
    (dict(question="   \n\t  "), ["type a problem", "Random problem"]),
    (dict(question=None), ["type a problem"]),
    (dict(question="Tom has 3 apples. " * 200), ["3599 characters", "this server accepts 2000"]),
    # within the characters but not the context: said in tokens, before any rollout
    (dict(question="Tom has 3 apples. " * 110, max_cot_tokens=96), ["551 tokens long", "reads 512 tokens", "Max CoT tokens at 96",
                                                  "389 tokens are left", "Shorten it"]),
    (dict(gold="9" * 5000), ["gold answer has 5000 characters", "this server accepts 2000"]),
    # rollouts per mode
    *[(dict(n=v), ["rollouts per mode", "between 1 and 32"]) for v in (-1, 0, 33, 10**9, 1e30)],
    *[(dict(n=v), ["rollouts per mode", WHOLE, "1 and 32"]) for v in (NAN, INF, -INF, 2.5, "eight", None)],
    # temperatures and noise
    *[(dict(soft_tau=v), ["soft τ must be between 0.0001 and 10"]) for v in (-1, 0, NAN, INF, -INF, 1e30)],
    *[(dict(hard_tau=v), ["hard τ must be between 0.0001 and 10"]) for v in (-1, 0, NAN, INF, 1e30)],
    (dict(soft_tau="warm"), ["soft τ must be a number"]),
    *[(dict(gamma=v), ["γ must be between 0 and 10"]) for v in (-1, -1e-9, NAN, INF, 1e30)],
    # CoT length and seed
    *[(dict(max_cot_tokens=v), ["max CoT tokens", "between 1 and 128"]) for v in (-1, 0, 129, 10**6)],
    *[(dict(max_cot_tokens=v), ["max CoT tokens", WHOLE]) for v in (NAN, INF, 8.5)],
    *[(dict(seed=v), ["seed", "between 0 and 2147483647"]) for v in (-1, 2**31, 10**30, 1e30)],
    *[(dict(seed=v), ["seed", WHOLE]) for v in (NAN, INF, -INF, 0.5, "zero")],
    # modes
    (dict(mode_names=["warm"]), ["unknown mode 'warm'", "choose from: hard"]),
    (dict(mode_names=["hard", "lukewarm"]), ["unknown mode 'lukewarm'"]),
    (dict(mode_names=[]), ["pick at least one mode"]),
    (dict(mode_names=None), ["pick at least one mode"]),
    (dict(mode_names=["hard", "soft", "fuzzy", "hard-greedy", "soft-greedy", "fuzzy-greedy", "gumbel"]),
     ["pick at most 6 modes", "you picked 7"]),
    # models: only the host's allow-list, never a path typed by a visitor
    *[(dict(model_name=v), ["is not offered here", "choose one of: embedded"])
      for v in ("gpt2", "Qwen/Qwen2.5-0.5B-Instruct", "/etc/passwd", "../softviz/assets/embedded", "~/.cache",
                "", None)],
    (dict(use_finetuned=True), ["no fine-tuned model in this session", "Train tab first"]),
]


@pytest.mark.parametrize("change, needles", COMPARE_CASES, ids=lambda x: repr(x)[:60] if isinstance(x, dict) else "")
def test_compare_refuses_bad_input_readably_and_writes_nothing(app, settings, problem, sessions, change, needles):
    session = sessions()
    with pytest.raises(gr.Error) as err:
        last(app.on_compare(*compare_args(problem, **change), settings, session))
    assert_readable(err.value.message, *needles)
    assert session.folder is None and session.compare is None  # refused before any rollout: no trace, no folder


def test_a_failed_comparison_keeps_the_last_one_whole(app, settings, problem, sessions):
    session = sessions()
    last(app.on_compare(*compare_args(problem), settings, session))
    kept, files = session.compare, files_in(session)
    assert len(files) == 1 and files[0].endswith(".safetensors")
    for change in (dict(n=NAN), dict(question=" "), dict(mode_names=["warm"]), dict(model_name="/etc")):
        with pytest.raises(gr.Error):
            last(app.on_compare(*compare_args(problem, **change), settings, session))
    assert session.compare is kept and files_in(session) == files  # no temporary or partial trace files


def test_non_ascii_problem_and_gold_come_back_with_results(app, settings, sessions):
    from softviz import Trace

    session = sessions()
    out = last(app.on_compare(*compare_args((NON_ASCII, "七"), mode_names=["hard", "soft"]), settings, session))
    assert NON_ASCII in out.summary and "七" in out.summary and "| hard |" in out.summary and "| soft |" in out.summary
    assert all(is_figure(f) for f in out.across.flat())  # pass@k too: the gold answer is given (and never matched)
    for label, slot in zip(["hard", "soft"], out.slots):
        header, shadow, download = slot.header, slot.shadow_text, slot.download
        assert header.startswith(f"### {label}") and "0/2 correct" in header
        assert shadow[0][0].startswith("#0 → ")
        trace = Trace.load(download.value["path"] if isinstance(download.value, dict) else download.value)
        assert NON_ASCII in trace.meta["prompts"][0] and trace.meta["golds"] == ["七"] * trace.num_rollouts
    explored = app.on_pick("soft", session)  # and Explore shows it
    assert NON_ASCII in explored.summary


def test_problems_of_control_characters_and_right_to_left_text_run(app, settings, sessions):
    for question in ("\x00\x01\x7f", "ما هو 3 + 4 ؟", "3 + 4 =\u200b?"):
        out = last(app.on_compare(*compare_args((question, ""), max_cot_tokens=8), settings, sessions()))
        assert "1 modes × 2 rollouts" in out.summary


@pytest.mark.parametrize("max_cot", [1, 2])
def test_the_shortest_comparisons_the_server_allows_complete(app, settings, problem, sessions, max_cot):
    """1 rollout of 1 or 2 CoT tokens: too few fed inputs for the 2-D projection, which is left empty."""
    session = sessions()
    out = last(app.on_compare(*compare_args(problem, n=1, max_cot_tokens=max_cot), settings, session))
    profiles, diversity, projection, passk = (out.across.profiles, out.across.diversity, out.across.projection,
                                              out.across.pass_at_k)
    assert is_figure(profiles) and is_figure(diversity) and projection is None and is_figure(passk)
    assert int(session.compare["traces"]["hard"].lengths[0]) == max_cot


# ---- Train -------------------------------------------------------------------------------------------------

TRAIN_CASES = [
    *[(dict(steps=v), ["steps", "between 1 and 60"]) for v in (-1, 0, 61, 10**6, 1e30)],
    *[(dict(steps=v), ["steps", WHOLE]) for v in (NAN, INF, -INF, 2.5, "many", None)],
    *[(dict(learning_rate=v), ["learning rate must be between 1e-07 and 0.01"]) for v in (-1, 0, NAN, INF, 1e30, 5.0)],
    (dict(learning_rate="fast"), ["learning rate must be a number"]),
    *[(dict(group_size=v), ["group size", "between 2 and 64"]) for v in (-1, 0, 1, 65, 10**6)],
    *[(dict(group_size=v), ["group size", WHOLE]) for v in (NAN, INF, 3.5)],
    *[(dict(prompts_per_step=v), ["prompts per step", "between 1 and 64"]) for v in (-1, 0, 65, 10**9)],
    *[(dict(prompts_per_step=v), ["prompts per step", WHOLE]) for v in (NAN, INF)],
    (dict(group_size=32, prompts_per_step=4), ["= 128 rollouts per step", "this server allows 64"]),
    *[(dict(mode=v), ["training mode must be one of hard, soft, fuzzy"]) for v in ("warm", "soft-greedy", "", None)],
    (dict(algorithm="ppo"), ["algorithm must be one of rloo, grpo"]),
    *[(dict(model_name=v), ["is not offered here", "choose one of: embedded"]) for v in ("gpt2", "/tmp", None)],
]


@pytest.mark.parametrize("change, needles", TRAIN_CASES, ids=lambda x: repr(x)[:60] if isinstance(x, dict) else "")
def test_train_refuses_bad_input_readably_and_keeps_no_model(app, settings, sessions, change, needles):
    args = dict(model_name="embedded", mode="hard", algorithm="rloo", steps=2, learning_rate=1e-4, group_size=4,
                prompts_per_step=2)
    args.update(change)
    session = sessions()
    with pytest.raises(gr.Error) as err:
        next(app.on_train(*args.values(), settings, session))
    assert_readable(err.value.message, *needles)
    assert session.finetuned is None and session.folder is None


# ---- Explore -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trace_bytes(app, settings, problem):
    """The bytes of a real trace file (hard, 2 rollouts), and the session that wrote it."""
    session = app.Session()
    app.compare("embedded", problem[0], problem[1], ["hard"], 2, 0.5, 1.0, 0.33, 16, 0, False, settings, session)
    data = Path(session.compare["files"]["hard"]).read_bytes()
    session.close()
    return data


BAD_FILES = {  # name -> (content from the real trace's bytes, words the message must hold)
    "truncated.safetensors": (lambda b: b[: len(b) // 2], ["is not a readable softviz trace", "truncated"]),
    "empty.safetensors": (lambda b: b"", ["is not a readable softviz trace", "Re-create it"]),
    "random.safetensors": (lambda b: os.urandom(4096), ["is not a readable softviz trace"]),
    "header-only.safetensors": (lambda b: b[:8], ["is not a readable softviz trace"]),
    "other.safetensors": (lambda b: b'\x02\x00\x00\x00\x00\x00\x00\x00{}', ["not a softviz trace"]),
    "notes.txt": (lambda b: b"my notes", ["is not a readable softviz trace"]),
    "trace.json": (lambda b: json.dumps({"meta": {}}).encode(), ["is not a readable softviz trace"]),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_trace_file_is_refused_by_name_and_the_open_trace_stays(app, settings, sessions, tmp_path,
                                                                     trace_bytes, name):
    make, needles = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(make(trace_bytes))
    good = tmp_path / "good.safetensors"
    good.write_bytes(trace_bytes)
    visitor = sessions()
    app.on_upload(str(good), settings, visitor)
    opened = visitor.explore
    with pytest.raises(gr.Error) as err:
        app.on_upload(str(path), settings, visitor)
    assert_readable(err.value.message, name, *needles)
    assert str(tmp_path) not in err.value.message  # the file's name, not where the server keeps it
    assert visitor.explore is opened and visitor.folder is None  # the open trace stays; nothing written


def test_a_trace_under_another_extension_still_opens(app, settings, sessions, tmp_path, trace_bytes):
    """The handler reads the content (the File widget, and Gradio on the server, only accept .safetensors)."""
    path = tmp_path / "trace.bin"
    path.write_bytes(trace_bytes)
    assert app.on_upload(str(path), settings, sessions()).summary.startswith("**hard**")


@pytest.mark.parametrize("path, needles", [
    (None, ["no file received"]), ("", ["no file received"]),
    ("/nonexistent/trace.safetensors", ["no longer on the server", "upload it again"]),
])
def test_a_missing_upload_is_a_message(app, settings, sessions, path, needles):
    with pytest.raises(gr.Error) as err:
        app.on_upload(path, settings, sessions())
    assert_readable(err.value.message, *needles)


def test_an_over_size_upload_is_refused_before_reading_it(app, sessions, tmp_path):
    big = tmp_path / "big.safetensors"
    with open(big, "wb") as f:
        f.truncate(3 * 2**20)  # 3 MB of zeros, without writing them
    with pytest.raises(gr.Error) as err:
        app.on_upload(str(big), app.Settings(max_upload_mb=2), sessions())
    assert_readable(err.value.message, "3.0 MB", "accepts traces up to 2 MB")


# ---- sliders -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def explored(app, settings, problem):
    session = app.Session()
    app.compare("embedded", problem[0], problem[1], ["hard", "soft"], 2, 0.5, 1.0, 0.33, 16, 0, False, settings,
                session)
    app.on_pick("soft", session)
    yield session
    session.close()


@pytest.mark.parametrize("value", [NAN, INF, -INF, None, "abc", 1.5])
def test_slider_positions_that_are_not_whole_numbers_are_refused(app, settings, explored, value):
    handlers = [lambda: app.on_rollout(value, settings, explored), lambda: app.on_explore_rollout(value, 0, explored),
                lambda: app.on_explore_rollout(0, value, explored)]
    for handler in handlers:
        with pytest.raises(gr.Error) as err:
            handler()
        assert_readable(err.value.message, WHOLE)


@pytest.mark.parametrize("value", [-5, 10**9])
def test_slider_positions_out_of_range_show_the_nearest(app, settings, explored, value):
    last_rollout = explored.explore.num_rollouts - 1
    assert f"rollout {0 if value < 0 else last_rollout}" in app.on_rollout(value, settings, explored)[1].soft_text
    assert app.on_explore_rollout(value, value, explored).step.text.startswith("**Step ")


def test_picking_a_mode_never_compared_is_a_message(app, explored):
    for label in ("fuzzy", None, "", "../hard"):
        with pytest.raises(gr.Error) as err:
            app.on_pick(label, explored)
        assert_readable(err.value.message, "run a comparison first")


# ---- the log: one line per visitor mistake, a traceback per bug ---------------------------------------------

def app_records(caplog) -> list[tuple[int, object, str]]:
    return [(r.levelno, r.exc_info, r.getMessage()) for r in caplog.records if r.name == "softviz.app"]


def test_a_visitors_mistake_is_one_log_line_without_a_traceback(app, settings, problem, sessions, caplog):
    with caplog.at_level(logging.INFO, logger="softviz.app"), pytest.raises(gr.Error) as err:
        last(app.on_compare(*compare_args(problem, question="   "), settings, sessions()))
    assert app_records(caplog) == [(logging.INFO, None,
                                    "visitor error in on_compare: type a problem, or press 'Random problem'")]
    assert err.value.print_exception is False  # else Gradio prints a traceback of its own for it


def test_a_gr_error_raised_on_purpose_is_one_line_too(app, caplog):
    @app.visitor_errors
    def handler():
        raise gr.Error("the file is\n  too big")

    with caplog.at_level(logging.INFO, logger="softviz.app"), pytest.raises(gr.Error) as err:
        handler()
    assert app_records(caplog) == [(logging.INFO, None, "visitor error in handler: the file is too big")]
    assert err.value.message == "the file is\n  too big" and err.value.print_exception is False  # shown as raised


def test_a_bug_is_logged_with_its_traceback(app, settings, problem, sessions, caplog, monkeypatch):
    def broken_loader(name, settings):
        raise RuntimeError("weights file truncated")

    monkeypatch.setattr("softviz.app.compare_tab.get_model", broken_loader)  # a bug, not a visitor's mistake
    with caplog.at_level(logging.INFO, logger="softviz.app"), pytest.raises(gr.Error) as err:
        last(app.on_compare(*compare_args(problem), settings, sessions()))
    [(level, exc_info, message)] = app_records(caplog)
    assert (level, message) == (logging.ERROR, "unexpected error in on_compare")
    assert exc_info[0] is RuntimeError and str(exc_info[1]) == "weights file truncated"
    assert err.value.message.startswith("Something went wrong on the server (RuntimeError: weights file truncated)")
    caplog.clear()  # expected here: no_unexpected_errors (autouse) fails a test that logs an error


# ---- through gradio_client and raw HTTP ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(app):
    settings = app.Settings(max_train_steps=4, max_upload_mb=1)
    demo = app.build_demo(settings)
    _, url, _ = app.launch(demo, settings, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield url
    for state in list(demo.server_app.state_holder.session_data.values()):  # Gradio keeps a closed client's
        for value in list(state.state_data.values()):  # session for an hour: free its trace folder now
            if isinstance(value, app.Session):
                value.close()
    demo.close()


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    c = Client(served, verbose=False)
    yield c
    c.close()


def call_raw(url: str, api: str, data_json: str, session_hash: str | None = None) -> tuple[str, object]:
    """POST /gradio_api/call/<api> with a JSON body written by hand (NaN and Infinity included, which gradio_client
    refuses to send), then read the result stream: ('complete', outputs) or ('error', message or None)."""
    import httpx

    body = '{"data": ' + data_json + (f', "session_hash": "{session_hash}"' if session_hash else "") + "}"
    r = httpx.post(f"{url}gradio_api/call/{api}", content=body, headers={"content-type": "application/json"},
                   timeout=60)
    r.raise_for_status()
    stream = httpx.get(f"{url}gradio_api/call/{api}/{r.json()['event_id']}", timeout=120).text
    event = data = None
    for line in stream.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data = json.loads(line.split(":", 1)[1])
    if event == "error":
        return "error", (data or {}).get("error") if isinstance(data, dict) else data
    return event, data


def client_error(client, *args, api_name="/compare") -> str:
    with pytest.raises(Exception) as err:
        client.predict(*args, api_name=api_name)
    return str(err.value)


@pytest.mark.parametrize("question, needles", [
    ("", ["type a problem"]), (" \n\t ", ["type a problem"]), ("x" * 5000, ["5000 characters", "accepts 2000"]),
])
def test_client_gets_a_readable_message_for_a_bad_problem(client, problem, question, needles):
    assert_readable(client_error(client, *compare_args(problem, question=question)), *needles)


def test_client_non_ascii_problem_returns_results(app, client):
    from softviz import Trace

    out = app.CompareView.from_api(client.predict(*compare_args((NON_ASCII, "7"), mode_names=["hard", "soft"]),
                                                  api_name="/compare"))
    assert NON_ASCII in out.summary and "| soft |" in out.summary
    assert json.loads(out.across.profiles["plot"])["data"]  # the entropy profiles
    header, shadow, download = out.slots[0].header, out.slots[0].shadow_text, out.slots[0].download
    assert header.startswith("### hard") and shadow[0]["token"].startswith("#0 → ")
    assert NON_ASCII in Trace.load(download["value"]).meta["prompts"][0]  # downloaded through the file route


@pytest.mark.parametrize("name, value, needles", [
    ("n", -1, ["Value -1 is less than minimum value 1"]),  # Gradio's own bounds check of the slider
    ("n", 999, ["Value 999 is greater than maximum value 32"]),
    ("max_cot_tokens", 1, ["Value 1 is less than minimum value 8"]),
    ("seed", -5, ["Value -5 is less than minimum value 0"]),
    ("seed", 1e30, ["seed must be between 0 and 2147483647"]),
    ("seed", 2.5, ["seed must be a whole number"]),
    ("gamma", -1, ["Value -1 is less than minimum value 0"]),
    ("mode_names", ["warm"], ["'warm'", "is not in the list of choices", "'hard'"]),
    ("model_name", "gpt2", ["gpt2 is not in the list of choices", "'embedded'"]),
    ("model_name", "/etc/passwd", ["/etc/passwd is not in the list of choices"]),
    ("use_finetuned", True, ["no fine-tuned model in this session"]),
])
def test_client_gets_a_readable_message_for_a_bad_value(client, problem, name, value, needles):
    assert_readable(client_error(client, *compare_args(problem, **{name: value})), *needles)


def test_nan_and_infinity_sent_raw_get_readable_messages(served, problem):
    """gradio_client cannot send NaN or Infinity (not JSON); a hand-written request can, and a browser's number
    field cannot. NaN passes Gradio's bounds checks, so the app's own checks answer it."""
    def raw_body(inputs: dict, name: str, raw: str) -> str:  # the JSON list of inputs, one of them written raw
        return "[" + ",".join(raw if k == name else json.dumps(v) for k, v in inputs.items()) + "]"

    cases = [("n", "NaN", "rollouts per mode must be a whole number"),
             ("n", "Infinity", "greater than maximum value 32"),
             ("soft_tau", "NaN", "soft τ must be between"), ("soft_tau", "Infinity", "soft τ must be between"),
             ("gamma", "NaN", "γ must be between"), ("max_cot_tokens", "NaN", "max CoT tokens must be a whole number"),
             ("seed", "NaN", "seed must be a whole number"), ("seed", "Infinity", "seed must be a whole number"),
             ("seed", "-Infinity", "less than minimum value 0")]
    for name, raw, needle in cases:
        inputs = {**compare_inputs(problem), "finetuned_run": None}  # a raw request sends every input
        event, message = call_raw(served, "compare", raw_body(inputs, name, raw))
        assert event == "error" and message, (name, raw, message)
        assert_readable(message, needle)
    train = dict(model_name="embedded", mode="hard", algorithm="rloo", steps=2, learning_rate=1e-4, group_size=2,
                 prompts_per_step=2, seed=0)
    for name, raw, needle in [("steps", "NaN", "steps must be a whole number"),
                              ("seed", "NaN", "seed must be a whole number"),
                              ("learning_rate", "NaN", "learning rate must be"),
                              ("group_size", "NaN", "group size must be a whole number")]:
        event, message = call_raw(served, "train", raw_body(train, name, raw))
        assert event == "error" and message, (name, raw, message)
        assert_readable(message, needle)


def test_client_bad_uploads_get_readable_messages(client, served, tmp_path, trace_bytes):
    import httpx
    from gradio_client import handle_file

    for name, content, needles in [
        ("random.safetensors", os.urandom(3000), ["random.safetensors is not a readable softviz trace"]),
        ("empty.safetensors", b"", ["empty.safetensors is not a readable softviz trace"]),
        ("cut.safetensors", trace_bytes[: len(trace_bytes) // 3], ["cut.safetensors is not a readable softviz trace"]),
        ("trace.txt", trace_bytes, ["Invalid file type", "'.safetensors'"]),  # Gradio checks the extension
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        message = client_error(client, handle_file(str(path)), api_name="/open_trace")
        assert_readable(message, *needles)
        assert "/gradio" not in message and str(tmp_path) not in message  # no server or client folders
    big = tmp_path / "big.safetensors"
    big.write_bytes(b"0" * (2 * 2**20))  # the server accepts 1 MB
    assert "exceeds the maximum file size" in client_error(client, handle_file(str(big)), api_name="/open_trace")
    with open(big, "rb") as f:  # past the client's own check, the server refuses the upload itself
        r = httpx.post(f"{served}gradio_api/upload", files={"files": ("big.safetensors", f)}, timeout=60)
    assert r.status_code == 413 and "maximum allowed size of 1048576 bytes" in r.text


def test_a_server_path_sent_as_an_upload_is_refused(served, tmp_path, trace_bytes):
    """A visitor cannot make the server open a file it never uploaded: Gradio refuses paths outside its cache."""
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(trace_bytes)
    for path in (str(outside), "/etc/passwd", "/tmp/gradio/../../etc/passwd.safetensors"):
        event, _ = call_raw(served, "open_trace", json.dumps([{"path": path, "meta": {"_type": "gradio.FileData"}}]))
        assert event == "error", path
