"""Load on the launched app: 8 gradio_client visitors press Compare at once (each its own problem and seed, some
with other modes) while a 9th fine-tunes; the wave runs twice, and the server's memory is sampled throughout.

    python benchmarks/bench_app_load.py [--concurrency 2] [--clients 8] [--waves 2] [--out ...]

The server is `python app/app.py --concurrency 2 ...` in its own process (what a host on 2 cores would run), with
its own TMPDIR (the visitors' trace folders) and GRADIO_TEMP_DIR (Gradio's file cache), so both can be counted.
GRADIO_IS_E2E_TEST=1 is Gradio's own testing switch: a closed client's session is dropped after 1 s instead of
Gradio's hour (and heartbeats run every 0.25 s), so the memory "after the sessions closed" is seen at once.
Prints per-client latency (median, max), the wall time of each wave, and the server's RSS before, at its peak
during, after each wave and after its sessions closed. tests/test_app_load.py runs the same load with assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODE_SETS = (("hard", "soft", "fuzzy"), ("soft", "fuzzy-greedy"), ("hard-greedy", "gumbel"), ("fuzzy", "dirichlet"))
ROLLOUTS, COT_TOKENS = 4, 32  # per mode: a comparison of ~1 s on an idle core, so a wave fits in a test
TRAIN = dict(mode="hard", algorithm="rloo", steps=2, learning_rate=1e-3, group_size=2, prompts_per_step=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_memory(pid: int) -> dict[str, int]:
    """{'rss': bytes, 'hwm': bytes} of a live process: psutil when installed, else /proc/<pid>/status."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out["rss" if key == "VmRSS" else "hwm"] = int(value.split()[0]) * 1024
    except OSError:
        pass
    try:
        import psutil

        out["rss"] = psutil.Process(pid).memory_info().rss
    except Exception:  # no psutil, or the process is gone: keep what /proc said
        pass
    return out


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


class RssSampler:
    """Samples a process's RSS every 0.1 s in a thread, so the peak of a time window can be read afterwards."""

    def __init__(self, pid: int):
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            rss = proc_memory(self.pid).get("rss")
            if rss:
                self.samples.append((time.perf_counter(), rss))

    def stop(self) -> None:
        self._stop.set()

    def rss(self) -> int:
        return proc_memory(self.pid)["rss"]

    def hwm(self) -> int | None:
        return proc_memory(self.pid).get("hwm")

    def peak_between(self, t0: float, t1: float) -> int:
        return max([r for t, r in self.samples if t0 <= t <= t1] or [self.rss()])


class Server:
    """`python app/app.py` on a free port in a child process, with its own temp folders and an RSS sampler."""

    def __init__(self, workdir: Path, concurrency: int = 2, extra_args=(), start_timeout_s: float = 180):
        self.workdir = Path(workdir)
        self.tmp, self.cache = self.workdir / "tmp", self.workdir / "gradio"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.args = ["--host", "127.0.0.1", "--port", str(self.port), "--concurrency", str(concurrency),
                     "--max-train-steps", "4", *extra_args]
        self.start_timeout_s = start_timeout_s
        self.proc = self.memory = None
        self.start_s = None

    def __enter__(self) -> "Server":
        import httpx

        env = {**os.environ, "TMPDIR": str(self.tmp), "GRADIO_TEMP_DIR": str(self.cache), "OMP_NUM_THREADS": "1",
               "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_IS_E2E_TEST": "1", "PYTHONUNBUFFERED": "1"}
        self.log = open(self.workdir / "server.log", "wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "app" / "app.py"), *self.args], cwd=ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        while time.perf_counter() - t0 < self.start_timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "gradio_api/info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            self.__exit__(None, None, None)
            raise RuntimeError(f"the app did not answer within {self.start_timeout_s:.0f} s:\n{self.log_tail()}")
        self.start_s = time.perf_counter() - t0
        self.memory = RssSampler(self.proc.pid)
        return self

    def __exit__(self, *exc) -> None:
        if self.memory is not None:
            self.memory.stop()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Gradio closes its server on Ctrl-C
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def session_folders(self) -> list[Path]:
        """The visitors' trace folders (Session.files() makes one per visitor that compared)."""
        return sorted(self.tmp.glob("softviz-app-*"))

    def log_tail(self, n: int = 4000) -> str:
        self.log.flush()
        return (self.workdir / "server.log").read_bytes()[-n:].decode(errors="replace")


def problems(count: int, offset: int = 0) -> list[tuple[str, str]]:
    """`count` distinct test problems (question, gold) of the embedded task."""
    from softviz.tasks import get_task

    task = get_task("arithmetic")
    return [(e.question, e.answer) for e in (task.example("test", 20 + offset + i) for i in range(count))]


def compare_requests(clients: int, wave: int) -> list[dict]:
    """One Compare per client: its own problem and seed, the mode sets in turn."""
    out = []
    for i, (question, gold) in enumerate(problems(clients, offset=wave * clients)):
        modes = list(MODE_SETS[i % len(MODE_SETS)])
        out.append(dict(model_name="embedded", question=question, gold=gold, mode_names=modes, n=ROLLOUTS,
                        soft_tau=0.5, hard_tau=1.0, gamma=0.33, max_cot_tokens=COT_TOKENS,
                        seed=1000 * (wave + 1) + 7 * i, use_finetuned=False))
    return out


def downloads(out, count: int) -> list[dict]:
    """The FileData ({'path', 'url', ...}) of each used column's 'Download trace' button in /compare's outputs."""
    from softviz.app import CompareView

    return [slot.download["value"] for slot in CompareView.from_api(out).slots[:count]]


def fetch_trace(file: dict, folder: Path):
    """Download one trace through the server's file route and load it."""
    import httpx

    from softviz import Trace

    r = httpx.get(file["url"], timeout=60)
    r.raise_for_status()
    fd, local = tempfile.mkstemp(dir=folder, suffix=".safetensors")
    with os.fdopen(fd, "wb") as f:
        f.write(r.content)
    return Trace.load(local)


def run_wave(url: str, memory: RssSampler, clients: int, wave: int, timeout_s: float = 240) -> dict:
    """`clients` visitors compare and one fine-tunes, all released at once. Returns, per visitor: the request, its
    outputs (or error) and latency; the trainer's outputs; the Client objects (still open); and the wall time."""
    from gradio_client import Client

    requests = compare_requests(clients, wave)
    visitors = [Client(url, verbose=False, download_files=False) for _ in range(clients + 1)]
    results: list[dict] = [{"request": r} for r in requests] + [{"request": dict(TRAIN)}]
    start = threading.Barrier(clients + 2)

    def comparer(i: int) -> None:
        start.wait()
        t0 = time.perf_counter()
        try:
            results[i]["out"] = visitors[i].predict(*requests[i].values(), api_name="/compare")
        except Exception as err:  # kept, reported by the caller
            results[i]["error"] = f"{type(err).__name__}: {err}"
        results[i]["latency_s"] = time.perf_counter() - t0

    def trainer() -> None:
        start.wait()
        t0 = time.perf_counter()
        try:
            job = visitors[-1].submit("embedded", *TRAIN.values(), api_name="/train")
            results[-1]["updates"] = list(job)
            results[-1]["out"] = job.result()  # the last update; raises what the server raised
        except Exception as err:
            results[-1]["error"] = f"{type(err).__name__}: {err}"
        results[-1]["latency_s"] = time.perf_counter() - t0

    threads = [threading.Thread(target=comparer, args=(i,), daemon=True) for i in range(clients)]
    threads.append(threading.Thread(target=trainer, daemon=True))
    for t in threads:
        t.start()
    rss_before = memory.rss()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout=max(1.0, timeout_s - (time.perf_counter() - t0)))
    t1 = time.perf_counter()
    for i, t in enumerate(threads):
        if t.is_alive():
            results[i].setdefault("error", f"no answer within {timeout_s:.0f} s")
    return {"results": results, "clients": visitors, "wall_s": t1 - t0, "rss_before": rss_before,
            "rss_peak": memory.peak_between(t0, t1), "rss_after": memory.rss(), "t0": t0, "t1": t1}


def close_clients(wave: dict, memory: RssSampler, session_folders, timeout_s: float = 20) -> dict:
    """Close every client of a wave and wait until the server has dropped their sessions (`session_folders()`, their
    trace folders, is empty). Returns the seconds that took, the folders left and the server's RSS then."""
    t0 = time.perf_counter()
    for c in wave["clients"]:
        c.close()
    while session_folders() and time.perf_counter() - t0 < timeout_s:
        time.sleep(0.25)
    return {"close_s": time.perf_counter() - t0, "folders_left": len(session_folders()),
            "rss_after_close": memory.rss()}


def mb(n: int | None) -> float | None:
    return None if n is None else n / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=2, help="the app's --concurrency (comparisons at once)")
    parser.add_argument("--clients", type=int, default=8, help="visitors comparing at once (plus one fine-tuning)")
    parser.add_argument("--waves", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_app_load.json"))
    args = parser.parse_args(argv)

    import torch

    from softviz.files import atomic_file

    rows, t_start = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="softviz-load-") as work, Server(Path(work), args.concurrency) as server:
        rss_start = server.memory.rss()
        print(f"app started in {server.start_s:.1f} s (python app/app.py {' '.join(server.args)}); "
              f"RSS {mb(rss_start):.0f} MB; load average {os.getloadavg()[0]:.2f}")
        for w in range(args.waves):
            wave = run_wave(server.url, server.memory, args.clients, w)
            closed = close_clients(wave, server.memory, server.session_folders)
            res = wave["results"]
            errors = [r["error"] for r in res if "error" in r]
            lat = [r["latency_s"] for r in res[:-1]]
            row = {"wave": w + 1, "wall_s": wave["wall_s"], "compare_latency_s": lat,
                   "compare_median_s": statistics.median(lat), "compare_max_s": max(lat),
                   "train_latency_s": res[-1]["latency_s"], "errors": errors,
                   "rss_before_mb": mb(wave["rss_before"]), "rss_peak_mb": mb(wave["rss_peak"]),
                   "rss_after_mb": mb(wave["rss_after"]), "rss_after_close_mb": mb(closed["rss_after_close"]),
                   "sessions_closed_in_s": closed["close_s"], "session_folders_left": closed["folders_left"],
                   "gradio_cache_mb": mb(folder_bytes(server.cache))}
            rows.append(row)
            print(f"wave {w + 1}: {args.clients} x Compare + 1 x Train ({TRAIN['steps']} steps) in "
                  f"{row['wall_s']:.1f} s; "
                  f"Compare latency median {row['compare_median_s']:.1f} s, max {row['compare_max_s']:.1f} s; "
                  f"Train {row['train_latency_s']:.1f} s; errors {len(errors)}")
            print(f"  server RSS before {row['rss_before_mb']:.0f} MB, peak {row['rss_peak_mb']:.0f} MB, after "
                  f"{row['rss_after_mb']:.0f} MB, after its sessions closed {row['rss_after_close_mb']:.0f} MB "
                  f"({closed['close_s']:.1f} s, {closed['folders_left']} trace folders left); Gradio's file cache "
                  f"{row['gradio_cache_mb']:.1f} MB")
            for e in errors:
                print("  error:", e)
        hwm = server.memory.hwm()
    total_s = time.perf_counter() - t_start
    out = {"setup": {"clients": args.clients, "concurrency": args.concurrency, "waves": args.waves,
                     "compare": {"rollouts": ROLLOUTS, "max_cot_tokens": COT_TOKENS,
                                 "mode_sets": [list(m) for m in MODE_SETS]}, "train": TRAIN,
                     "app_start_s": server.start_s, "cpu_count": os.cpu_count(), "torch_threads": 1,
                     "load_average_1min": os.getloadavg()[0], "python": platform.python_version(),
                     "torch": torch.__version__, "gradio": __import__("gradio").__version__},
           "total_wall_s": total_s, "rss_start_mb": mb(rss_start), "rss_hwm_mb": mb(hwm), "waves": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(args.out) as tmp:
        Path(tmp).write_text(json.dumps(out, indent=2) + "\n")
    print(f"total {total_s:.1f} s (start, {args.waves} waves, stop); server VmHWM (peak RSS since start) "
          f"{mb(hwm):.0f} MB; wrote {args.out}")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
