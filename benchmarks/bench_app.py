"""The app's default comparison (hard, soft, fuzzy x 8 rollouts on the embedded model) once the app has started,
against the 2 s target, and a change of rollout (Compare) or step (Explore) against 0.5 s: the handler alone;
through gradio_client (queue, serialisation, HTTP); and in headless Chromium, from the click on Compare until the
answers, shadow texts and entropy heatmaps are shown (the first of the handler's two updates), and until every
figure is drawn (what a visitor waits for); from typing a rollout (or step) into a slider's box until its figures
are drawn: a rollout never drawn before (the first change after each comparison), and the slider stepped one at a
time (the server draws each step's neighbours ahead while the browser draws).

    python benchmarks/bench_app.py [--repeats 5] [--out benchmarks/results/bench_app.json]

Each browser repeat opens the page afresh (a new visitor). The first request after start is reported apart from
the median of the rest. Without Chromium (/usr/bin/chromium, or SOFTVIZ_CHROMIUM) the browser rows are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 2.0  # the default comparison fully drawn after the click
CHROMIUM = os.environ.get("SOFTVIZ_CHROMIUM", "/usr/bin/chromium")
# Columns of the three modes with answers and their entropy heatmap (the first update), then with all three
# figures each, and the four figures across modes (the second update; the page opens with 4 placeholders).
SHOWN = """() => [...document.querySelectorAll('.sv-mode-column')]
    .filter(c => c.textContent.includes('correct') && c.querySelectorAll('.js-plotly-plot').length >= 1).length >= 3"""
ALL_DRAWN = """() => [...document.querySelectorAll('.sv-mode-column')]
    .filter(c => c.querySelectorAll('.js-plotly-plot').length >= 3).length >= 3
    && document.querySelectorAll('.js-plotly-plot').length >= 13"""


ROLLOUT_LABEL = "Rollout shown step by step in each column (soft text, mixture weights, nearest vocabulary)"
# textContent, not innerText: reading innerText lays the page out, and polling it every 10 ms would slow what it
# measures
ROLLOUT_SHOWN = """(r) => [...document.querySelectorAll('.sv-mode-column .softviz-soft-text')].slice(0, 3)
    .filter(c => c.textContent.includes('rollout ' + r + ' (answer')).length === 3"""
STEP_SHOWN = """(t) => [...document.querySelectorAll('.softviz-soft-text')]
    .some(c => c.textContent.includes('red outline = step ' + t) && c.textContent.includes('rollout 0 (answer'))"""
# no plotly figure is still being drawn (Plotly.react sets _transitioning / the plot's promise queue)
PLOTS_IDLE = """() => [...document.querySelectorAll('.js-plotly-plot')].every(p => !p._promises || !p._promises.length)"""
REDRAW_TARGET_S = 0.5


def default_args(app):
    question, gold = app.first_problem()
    return ["embedded", question, gold, list(app.DEFAULT_MODES), 8, 0.5, 1.0, 0.33, 96, 0, False]


def summary(times: list[float]) -> dict:
    return {"first_s": times[0], "median_s": statistics.median(times[1:] or times), "all_s": times}


def timed(fn, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return summary(times)


def bench_browser(url: str, repeats: int) -> tuple[dict, dict] | None:
    """(click -> results shown, click -> every figure drawn, then a rollout never drawn before), each over `repeats`
    fresh page loads; then on the last page the rollout slider stepped one at a time and Explore's step."""
    if not os.path.isfile(CHROMIUM):
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})

        def redraw(label: str, wanted: str, value: int) -> float:
            """Type `value` into a slider's box and press Enter; seconds from the typing (its input event already
            sends the request) until `wanted` (a JS predicate of the value) holds and the figures are drawn."""
            box = page.get_by_label(f"number input for {label}")
            t0 = time.perf_counter()
            box.fill(str(value))
            box.press("Enter")
            page.wait_for_function(wanted, arg=value, timeout=60_000, polling=10)
            page.wait_for_function(PLOTS_IDLE, timeout=60_000, polling=10)
            return time.perf_counter() - t0

        def one():
            """(click -> shown, click -> drawn, a first rollout change: one not drawn before)."""
            page.goto(url)
            button = page.get_by_role("button", name="Compare", exact=True)
            button.wait_for(timeout=60_000)
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 4", timeout=60_000)
            page.wait_for_timeout(500)  # the page has settled, as when a visitor has read the problem
            t0 = time.perf_counter()
            button.click()
            page.wait_for_function(SHOWN, timeout=60_000, polling=20)
            t1 = time.perf_counter()
            page.wait_for_function(ALL_DRAWN, timeout=60_000, polling=20)
            t2 = time.perf_counter()
            page.wait_for_timeout(1000)  # a visitor looks at the results before choosing a rollout
            return t1 - t0, t2 - t0, redraw(ROLLOUT_LABEL, ROLLOUT_SHOWN, 5)

        times = [one() for _ in range(repeats)]
        # the rollout slider stepped one at a time (every column's soft text, mixture and nearest-vocabulary
        # figures; each step's neighbours are drawn ahead on the server while the browser draws), then Explore's step
        rollouts = [redraw(ROLLOUT_LABEL, ROLLOUT_SHOWN, r) for r in (4, 3, 2, 1, 0, 1)[: repeats + 1]]
        page.get_by_role("tab", name="Explore").click()
        page.get_by_label("…or a mode of your last comparison").click()
        page.get_by_role("option", name="soft").click()
        page.get_by_text("Step 0 of rollout 0").first.wait_for(timeout=30_000)
        steps = [redraw("CoT step", STEP_SHOWN, t) for t in (1, 2, 3, 4, 5, 6)[: repeats + 1]]
        browser.close()
    return (summary([t[0] for t in times]), summary([t[1] for t in times]), summary([t[2] for t in times]),
            summary(rollouts), summary(steps))


def main() -> None:
    import tempfile

    # everything the run writes (the app's session folders, Gradio's and gradio_client's file copies) goes under one
    # temporary folder, removed at the end
    with tempfile.TemporaryDirectory(prefix="softviz-bench-app-") as scratch:
        tempfile.tempdir = scratch
        os.environ["GRADIO_TEMP_DIR"] = scratch
        try:
            run()
        finally:
            tempfile.tempdir = None


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_app.json"))
    args = parser.parse_args()

    t0 = time.perf_counter()
    import softviz.app as app

    settings = app.Settings()
    app.warm_up(settings)
    demo = app.build_demo(settings)
    _, url, _ = app.launch(demo, settings, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    start_s = time.perf_counter() - t0

    rows = {}
    try:
        # the browser first: its first click is the first request the started app serves
        browser = bench_browser(url, args.repeats)
        if browser is not None:
            rows["browser: click -> results shown"] = browser[0]
            rows["browser: click -> every figure drawn"] = browser[1]
            rows["browser: rollout typed + Enter (new) -> redrawn"] = browser[2]
            rows["browser: next rollout typed (drawn ahead) -> redrawn"] = browser[3]
            rows["browser: Explore step typed + Enter -> redrawn"] = browser[4]
        from gradio_client import Client

        client = Client(url, verbose=False)
        rows["gradio_client: /compare round trip"] = timed(
            lambda: client.predict(*default_args(app), api_name="/compare"), args.repeats)
        client.close()
        rows["handler on_compare, called directly"] = timed(
            lambda: list(app.on_compare(*default_args(app), settings, app.Session())), args.repeats)
        visitor = app.Session()
        list(app.on_compare(*default_args(app), settings, visitor))
        app.on_pick("soft", visitor)
        rows["handler on_rollout, called directly"] = timed(lambda: app.on_rollout(3, settings, visitor), args.repeats)
        rows["handler on_explore_rollout (a step), called directly"] = timed(
            lambda: app.on_explore_rollout(0, 5, visitor), args.repeats)
        visitor.close()
    finally:
        demo.close()

    def target(name: str) -> float:
        return REDRAW_TARGET_S if ("rollout" in name or "step" in name) else TARGET_S

    print(f"app start (import, model load, warm-up, launch): {start_s:.1f} s; "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    print(f"default comparison: {', '.join(app.DEFAULT_MODES)} x 8 rollouts, target {TARGET_S:.1f} s fully drawn; "
          f"a rollout or step change, target {REDRAW_TARGET_S:.1f} s (ratio = time / target, <= 1 meets it)")
    for name, r in rows.items():
        t = target(name)
        print(f"  {name:<52} first {r['first_s']:5.2f} s ({r['first_s'] / t:.2f})   "
              f"median {r['median_s']:5.2f} s ({r['median_s'] / t:.2f})")
    for name in ("browser: click -> every figure drawn", "browser: rollout typed + Enter (new) -> redrawn",
                 "browser: next rollout typed (drawn ahead) -> redrawn", "browser: Explore step typed + Enter -> redrawn"):
        if name in rows:
            m, t = rows[name]["median_s"], target(name)
            print(f"{name}: median {m:.2f} s, ratio to target {m / t:.2f} ({'meets' if m <= t else 'misses'} "
                  f"the {t:.1f} s target)")
    out = {"setup": {"modes": list(app.DEFAULT_MODES), "rollouts": 8, "max_cot_tokens": 96, "model": "embedded",
                     "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "load_average_1min": os.getloadavg()[0], "python": platform.python_version(),
                     "torch": torch.__version__, "gradio": __import__("gradio").__version__,
                     "repeats": args.repeats, "target_s": TARGET_S, "redraw_target_s": REDRAW_TARGET_S,
                     "app_start_s": start_s},
           "rows": {k: {**v, "target_s": target(k), "first_ratio": v["first_s"] / target(k),
                        "median_ratio": v["median_s"] / target(k)} for k, v in rows.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
