"""Per-visitor state (Session), the browser sessions that own them (Sessions), and their folders on disk.

Each session's traces live in <temp folder>/softviz-app-<pid>-XXXXXXXX. The pid names the process that owns the
folder, so a server deletes all of its folders when it stops, and one starting later deletes those of servers
that were killed (SIGKILL, a crash) without ever touching a live server's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr  # at run time: Gradio reads the `request: gr.Request` annotations to pass the request

if TYPE_CHECKING:
    from softviz import Trace

log = logging.getLogger("softviz.app")

FOLDER_PREFIX = "softviz-app-"
_FOLDER_NAME = re.compile(re.escape(FOLDER_PREFIX) + r"(\d+)-[a-z0-9_]+")  # mkdtemp's suffix has no "-"


@dataclasses.dataclass
class Session:
    """One visitor's things, never shared: the last comparison, the trace being explored, a fine-tuned model."""

    compare: dict | None = None  # prompt, gold, traces {label: Trace}, files {label: path}, seconds
    explore: Trace | None = None
    selection: dict | None = None  # Compare's selected step: {"mode", "rollout", "step"}
    rollout_changes: int = 0  # rollout slider changes so far (a newer one stops drawing the last one's neighbours)
    runs: list = dataclasses.field(default_factory=list)  # every kept fine-tune of this session, oldest first
    run_count: int = 0  # fine-tunes started in this session (numbers the runs' labels)
    train_requested_at: float | None = None  # when Train was pressed (time.monotonic()); the run may wait in the queue
    cancel_at: float | None = None  # when Cancel was pressed: stops a run requested before it, between steps
    training: bool = False  # a fine-tune of this session is running (Cancel has something to stop)
    closed: bool = False
    folder: str | None = None  # this visitor's trace files

    def files(self) -> Path:
        if self.folder is None:
            self.folder = new_folder()
        return Path(self.folder)

    @property
    def finetuned(self) -> dict | None:
        """The latest kept fine-tune (model, tokenizer, base, config, metrics, label), or None."""
        return self.runs[-1] if self.runs else None

    def run(self, label: str | None = None) -> dict:
        """A kept fine-tune by label (None: the latest), or ValueError naming the ones there are."""
        if not self.runs:
            raise ValueError("there is no fine-tuned model in this session yet: run one in the Train tab first")
        if label in (None, ""):
            return self.runs[-1]
        for r in self.runs:
            if r["label"] == label:
                return r
        raise ValueError(f"no fine-tuned run {label!r} in this session; runs: {', '.join(r['label'] for r in self.runs)}")

    def close(self) -> None:
        """Stop a running fine-tune, drop the model and traces, delete the files."""
        self.closed = True
        self.compare = self.explore = self.selection = None
        self.runs = []
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


class Sessions:
    """Binds each browser session (Gradio's session hash) to its Session, so closing the tab frees it at once.
    Gradio also deletes a Session when its gr.State expires (API clients never 'close a tab')."""

    def __init__(self):
        self._by_hash: dict[str, Session] = {}
        self._lock = threading.Lock()

    def bind(self, session: Session, request: gr.Request) -> None:
        with self._lock:
            self._by_hash[request.session_hash] = session

    def close(self, request: gr.Request) -> None:
        with self._lock:
            session = self._by_hash.pop(request.session_hash, None)
        if session is not None:
            session.close()

    def __len__(self) -> int:
        return len(self._by_hash)


def new_session() -> Session:
    """gr.State calls this once per visitor (a plain function: Gradio would try to serialise a dataclass type)."""
    return Session()


def close_session(session: Session | None) -> None:
    """gr.State calls this when a visitor's state expires."""
    if session is not None:
        session.close()


# ---- files on disk ----------------------------------------------------------------------------------------

def new_folder() -> str:
    """A new trace folder owned by this process."""
    return tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")


def _folders(root: str | None = None) -> list[tuple[int, Path]]:
    """(owner pid, path) of every trace folder in `root` (default: the temp folder), in pid-named form."""
    found = []
    for path in Path(root or tempfile.gettempdir()).glob(FOLDER_PREFIX + "*"):
        m = _FOLDER_NAME.fullmatch(path.name)
        if m and path.is_dir() and not path.is_symlink():
            found.append((int(m.group(1)), path))
    return found


def _alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(0, ...) would signal our own process group: such a pid owns nothing
        return False
    try:
        os.kill(pid, 0)  # signal 0: no signal is sent, only whether the process exists is checked
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to another user
        return True
    return True


def remove_stale_folders(root: str | None = None) -> list[Path]:
    """Delete the trace folders of processes that no longer exist; returns what was deleted."""
    stale = [path for pid, path in _folders(root) if pid != os.getpid() and not _alive(pid)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def remove_own_folders(root: str | None = None) -> list[Path]:
    """Delete every trace folder of this process (all of its sessions'); returns what was deleted."""
    own = [path for pid, path in _folders(root) if pid == os.getpid()]
    for path in own:
        shutil.rmtree(path, ignore_errors=True)
    return own


def clean_up_on_signals(signums=(signal.SIGINT, signal.SIGTERM)) -> None:
    """On SIGINT or SIGTERM, delete this process's trace folders, then do what the signal did before: call the
    previous handler (SIGINT's raises KeyboardInterrupt, which Gradio answers by closing its server), or for a
    default action exit by SystemExit(128 + signal) (the status a shell shows), so `finally` blocks still run.
    A signal ignored when we start (nohup, a background job) stays ignored. Call it from the main thread."""
    for signum in signums:
        previous = signal.getsignal(signum)
        if previous == signal.SIG_IGN:
            continue

        def handler(num, frame, previous=previous):
            removed = remove_own_folders()
            log.info("%s: deleted %d session folder(s)", signal.Signals(num).name, len(removed))
            if callable(previous):
                previous(num, frame)
            else:  # SIG_DFL, or None (a handler not installed from Python)
                raise SystemExit(128 + num)

        signal.signal(signum, handler)
