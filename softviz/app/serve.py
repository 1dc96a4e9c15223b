"""Starting the app: warm the model up, queue with the host's limits, launch; clean up the session folders."""

from __future__ import annotations

import gc
import logging
import sys

import gradio as gr

from softviz import TraceConfig, generate
from softviz.tasks import get_task

from .checks import get_model
from .compare_tab import first_problem
from .layout import CSS, PAGE_JS, build_demo
from .session import clean_up_on_signals, remove_own_folders, remove_stale_folders
from .settings import DEFAULT_MODES, TASK, Settings, parse_args

log = logging.getLogger("softviz.app")


def warm_up(settings: Settings) -> None:
    """Load the default model and run one tiny rollout per default mode, so the first visitor waits for nothing.
    Then what is loaded (torch, gradio, plotly, the model: ~1 M objects) is moved out of the garbage collector's
    reach (gc.freeze): its full passes over them took 0.12-0.25 s each and could land in any visitor's request."""
    from softviz.tasks.arithmetic import known_words

    model, tok = get_model(settings.models[0], settings)
    task = get_task(TASK)
    known_words()  # the embedded model's words, for Compare's out-of-reach note
    for name in DEFAULT_MODES:
        generate(model, tok, [task.prompt(first_problem().question, tok)], name, n=2, max_cot_tokens=8,
                 max_answer_tokens=2, trace=TraceConfig(keep_inputs=True), answer_cue=task.answer_cue)
    gc.collect()
    gc.freeze()


def launch(demo: gr.Blocks, settings: Settings, **kwargs):
    """Queue with the host's limits and launch; the page's CSS goes to launch() since Gradio 6.
    kwargs go to gr.Blocks.launch (server_name, server_port, share, prevent_thread_lock, ...)."""
    demo.queue(max_size=settings.max_queue, default_concurrency_limit=settings.concurrency)
    # state_session_capacity bounds the page states Gradio keeps for closed sessions (its default is 10,000).
    # run_history off: Gradio 6 would store every call's inputs and outputs (a comparison's figures: ~1 MB) in the
    # visitor's localStorage, re-writing the whole list on each event (~80 ms of a rollout change); the app keeps
    # its own record (Train's runs, Compare's export)
    return demo.launch(max_file_size=f"{settings.max_upload_mb}mb", css=CSS, js=PAGE_JS, footer_links=["api", "gradio"],
                       **{"state_session_capacity": 1000, "run_history": False, **kwargs})


def main(argv=None) -> None:
    """`python app/app.py [--share] [--host H] [--port P] [--models a,b] [--max-rollouts N] ...`

    Deletes the session folders of killed servers before it starts, and all of its own when it stops."""
    try:
        settings, args = parse_args(argv)
    except ValueError as err:
        print(f"softviz app: error: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    # our lines (visitors' mistakes, folders deleted) at INFO; other libraries' only from WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("softviz").setLevel(logging.INFO)
    stale = remove_stale_folders()
    if stale:
        log.info("deleted %d session folder(s) left by stopped servers", len(stale))
    clean_up_on_signals()
    demo = None
    try:
        warm_up(settings)
        demo = build_demo(settings)
        launch(demo, settings, server_name=args.host, server_port=args.port, share=args.share)
    finally:  # Ctrl-C, SIGTERM or an error: close the server (Gradio deletes its cached files) and ours
        if demo is not None:
            demo.close(verbose=False)
        remove_own_folders()
