"""The launched app under load, as a host on 2 cores would run it (concurrency 2): 8 gradio_client visitors press
Compare at once, each with its own problem and seed and some with other modes, while a 9th fine-tunes; the wave
runs twice. Every visitor must finish in time with its own results (its trace files say its seed, modes and
problem; its answers equal a direct handler call), the fine-tuned model must stay in its session, no session may
open another's trace file, and the server's memory must stay bounded, with every session freed once its client
closes. The load itself is benchmarks/bench_app_load.py's (which runs the app in a process of its own and prints
latencies); here the app runs in-process, as tests/test_app.py's `served` fixture does, so the sessions can be
inspected. After each wave glibc's cache of freed memory is handed back (malloc_trim), so the RSS compared between
waves is what the app holds, not what the allocator keeps (`pytest -s` prints the numbers).
"""

import gc
import importlib.util
import json
import os
import re
import sys
import tempfile
import weakref
from pathlib import Path

import pytest

pytest.importorskip("gradio")
sys.path.insert(0, str(Path(__file__).parent))
from test_app_hardening import call_raw  # noqa: E402

pytestmark = pytest.mark.slow  # ~1 min on 2 busy cores
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_app_load.py"
CLIENTS, WAVES = 8, 2
PEAK_LIMIT = 4 * 2**30  # bytes: generous; the embedded model's app peaks under 1.5 GB here


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_app_load", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def server_session(demo, app, client):
    """The app's Session of a gradio_client visitor (the value of its gr.State on the server)."""
    state = demo.server_app.state_holder.session_data[client.session_hash]
    found = [v for v in state.state_data.values() if isinstance(v, app.Session)]
    assert len(found) == 1
    return found[0]


def visitor_checks(bench, demo, app, url, wave, work: Path) -> dict:
    """What is checked while a wave's clients are still open: their traces, the fine-tuned model's reach, and
    whether one session can open another's files."""
    import httpx

    res, clients = wave["results"], wave["clients"]
    out = {"traces": [], "files": [], "not_mine": [], "cross": []}
    for i, r in enumerate(res[:-1]):
        assert "error" not in r, f"visitor {i}: {r['error']}"
        files = bench.downloads(r["out"], len(r["request"]["mode_names"]))
        out["files"].append(files)
        out["traces"].append([bench.fetch_trace(f, work) for f in files])
    # the trainer compares with its fine-tuned model; every other visitor asking for one has none
    trainer = clients[-1]
    ask = dict(res[0]["request"], use_finetuned=True)
    out["trainer_compare"] = trainer.predict(*ask.values(), api_name="/compare")
    for i, c in enumerate(clients[:-1]):
        ask = dict(res[i]["request"], use_finetuned=True)
        with pytest.raises(Exception) as err:
            c.predict(*ask.values(), api_name="/compare")
        out["not_mine"].append(str(err.value))
    # sessions: the server's own objects, weakly held (to see them freed after the clients close)
    sessions = [server_session(demo, app, c) for c in clients]
    out["sessions"] = [weakref.ref(s) for s in sessions]
    out["finetuned"] = weakref.ref(sessions[-1].finetuned["model"])
    assert all(s.finetuned is None for s in sessions[:-1])
    # visitor 1 tries visitor 0's trace files: by their place on the server, and through Explore
    a_files = sorted(Path(sessions[0].folder).iterdir())
    assert a_files
    for path in a_files:
        upload = json.dumps([{"path": str(path), "meta": {"_type": "gradio.FileData"}}])
        event, _ = call_raw(url, "open_trace", upload, session_hash=clients[1].session_hash)
        status = httpx.get(f"{url}gradio_api/file={path}", timeout=30).status_code
        out["cross"].append((event, status))
    out["b_explore"] = sessions[1].explore
    label_a_only = next(m for m in res[0]["request"]["mode_names"] if m not in res[1]["request"]["mode_names"])
    with pytest.raises(Exception) as err:
        clients[1].predict(label_a_only, api_name="/pick_trace")
    out["b_pick_a"] = str(err.value)
    own = res[1]["request"]["mode_names"][0]
    out["b_pick_own"] = app.OpenedTrace.from_api(clients[1].predict(own, api_name="/pick_trace")).summary
    return out


def trimmed_rss(memory) -> int | None:
    """RSS once glibc has handed its free heap back to the OS (malloc_trim): what the live objects hold, without
    the arenas' cache of freed memory. None where libc has no malloc_trim."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return None
    return memory.rss()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Two waves against the app launched in this process; what each wave returned and what was checked."""
    bench = load_bench()
    work = tmp_path_factory.mktemp("load")
    (work / "tmp").mkdir()
    saved_env = {k: os.environ.get(k) for k in ("GRADIO_IS_E2E_TEST", "GRADIO_TEMP_DIR")}
    saved_tempdir = tempfile.tempdir
    # Gradio's testing switch: a closed client's session is dropped after 1 s, not an hour (heartbeats: 0.25 s)
    os.environ["GRADIO_IS_E2E_TEST"] = "1"
    os.environ["GRADIO_TEMP_DIR"] = str(work / "gradio")
    tempfile.tempdir = str(work / "tmp")  # the visitors' trace folders land here, to be counted
    import softviz.app as app

    settings = app.Settings(concurrency=2, max_train_steps=4)  # what `python app/app.py --concurrency 2` runs
    demo = app.build_demo(settings)
    memory = None
    try:
        app.warm_up(settings)
        _, url, _ = app.launch(demo, settings, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        memory = bench.RssSampler(os.getpid())
        folders = lambda: sorted((work / "tmp").glob("softviz-app-*"))  # noqa: E731
        report = {"rss_start": memory.rss(), "waves": []}
        for w in range(WAVES):
            wave = bench.run_wave(url, memory, CLIENTS, w)
            wave["checks"] = visitor_checks(bench, demo, app, url, wave, work)
            wave["folders_before_close"] = len(folders())
            wave.update(bench.close_clients(wave, memory, folders))
            gc.collect()
            wave["rss_after_trim"] = trimmed_rss(memory)
            wave["gradio_sessions_kept"] = len(demo.server_app.state_holder.session_data)
            wave["clients"] = None
            report["waves"].append(wave)
        report["hwm"] = memory.hwm()
        yield app, settings, report
    finally:
        if memory is not None:
            memory.stop()
        demo.close()
        tempfile.tempdir = saved_tempdir
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_every_visitor_finishes_without_error_in_time(loaded):
    app, _, report = loaded
    for wave in report["waves"]:
        errors = [r["error"] for r in wave["results"] if "error" in r]
        assert not errors and wave["wall_s"] < 240
        assert "Finished after 2 of 2 steps" in app.TrainView.from_api(wave["results"][-1]["out"]).status


def test_each_visitor_gets_its_own_results(loaded):
    """Each visitor's traces carry its own seed, modes and problem, and replay exactly in a direct handler call
    (so no rollout of one request leaked into another's, even with two comparisons and a fine-tune at once)."""
    app, settings, report = loaded
    for wave in report["waves"]:
        for r, traces in zip(wave["results"][:-1], wave["checks"]["traces"]):
            req = r["request"]
            assert [t.meta["mode_label"] for t in traces] == req["mode_names"]
            assert all(t.meta["seed"] == req["seed"] and req["question"] in t.meta["prompts"][0] for t in traces)
            session = app.Session()
            try:
                direct = app.compare(*req.values(), settings, session)
                for trace, label in zip(traces, req["mode_names"]):
                    mine = direct["traces"][label]
                    assert trace.meta["answers"] == mine.meta["answers"], (req["seed"], label)
                    assert trace.tokens.equal(mine.tokens) and trace.lengths.equal(mine.lengths), (req["seed"], label)
                got = app.CompareView.from_api(r["out"])
                summary = re.sub(r"in \d+\.\d s\.", "", got.summary)
                assert summary == re.sub(r"in \d+\.\d s\.", "", app.summary_markdown(direct))
                for i, label in enumerate(req["mode_names"]):
                    assert got.slots[i].header == app.column_header(direct["traces"][label])
            finally:
                session.close()


def test_the_fine_tuned_model_stays_in_its_session(loaded):
    app, _, report = loaded
    for wave in report["waves"]:
        checks = wave["checks"]
        assert "fine-tuned from embedded" in app.CompareView.from_api(checks["trainer_compare"]).summary
        assert len(checks["not_mine"]) == CLIENTS
        assert all("no fine-tuned model in this session" in m for m in checks["not_mine"])


def test_no_session_opens_another_sessions_trace_files(loaded):
    _, _, report = loaded
    for wave in report["waves"]:
        checks = wave["checks"]
        assert checks["cross"] and all(event == "error" and status == 403 for event, status in checks["cross"])
        assert checks["b_explore"] is None  # nothing of visitor 0 was opened in visitor 1's Explore
        assert "not in the list of choices" in checks["b_pick_a"] or "run a comparison first" in checks["b_pick_a"]
        assert checks["b_pick_own"].startswith("**")  # its own trace opens
        # what a visitor downloads is Gradio's copy, in a folder named by a digest salted with the server's secret
        for files in checks["files"]:
            assert all(re.search(r"/[0-9a-f]{64}/trace-[^/]+\.safetensors$", f["path"]) for f in files)


def test_memory_stays_bounded_and_closed_sessions_are_freed(loaded):
    _, _, report = loaded
    mb = lambda n: n / 2**20  # noqa: E731
    lines = [f"server (in-process) RSS at start {mb(report['rss_start']):.0f} MB, VmHWM {mb(report['hwm']):.0f} MB"]
    for w, wave in enumerate(report["waves"]):
        lat = [r["latency_s"] for r in wave["results"][:-1]]
        lines.append(f"wave {w + 1}: {wave['wall_s']:.1f} s; Compare median {sorted(lat)[len(lat) // 2]:.1f} s, max "
                     f"{max(lat):.1f} s; RSS before {mb(wave['rss_before']):.0f} MB, peak {mb(wave['rss_peak']):.0f} "
                     f"MB, after {mb(wave['rss_after']):.0f} MB, after close {mb(wave['rss_after_close']):.0f} MB "
                     f"(sessions freed in {wave['close_s']:.1f} s), after malloc_trim "
                     f"{mb(wave['rss_after_trim'] or 0):.0f} MB; Gradio keeps {wave['gradio_sessions_kept']} "
                     "closed sessions' page state")
    print("\n" + "\n".join(lines))
    first, second = report["waves"]
    assert max(first["rss_peak"], second["rss_peak"]) < PEAK_LIMIT
    assert second["rss_peak"] <= 1.25 * first["rss_peak"], lines
    if first["rss_after_trim"] and second["rss_after_trim"]:  # what live objects hold once the sessions closed
        # measured ~3 MB per closed session, partly Gradio keeping its page state (until 10,000 sessions)
        assert second["rss_after_trim"] - first["rss_after_trim"] < 100 * 2**20, lines
    for wave in report["waves"]:
        assert wave["folders_before_close"] == CLIENTS + 1  # a trace folder per visitor that compared (all 9)...
        assert wave["folders_left"] == 0  # ...all deleted once the clients closed
        checks = wave["checks"]
        assert checks["finetuned"]() is None  # the fine-tuned copy is freed
        assert all(ref() is None or ref().closed for ref in checks["sessions"])
