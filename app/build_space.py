"""Assemble a folder that deploys as a Hugging Face Space: app.py, README.md (with the Spaces header),
requirements.txt, and a copy of the softviz package with its embedded model (softviz is not on PyPI).

    python app/build_space.py [OUT]        # default OUT: build/space
    cd build/space && gradio deploy        # or commit the folder to the Space's git repository

On the Space, `python app.py` runs with OUT as its working directory, so `import softviz.app` finds the copy.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FILES = ("app.py", "README.md", "requirements.txt")


def build(out: str | Path) -> Path:
    """Write the Space's files into `out` (replaced if it exists) and return it."""
    out = Path(out)
    if out.resolve() in (ROOT, HERE) or ROOT.resolve().is_relative_to(out.resolve()):
        raise ValueError(f"refusing to replace {out}: it holds the repository")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in FILES:
        shutil.copy2(HERE / name, out / name)
    shutil.copytree(ROOT / "softviz", out / "softviz", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return out


if __name__ == "__main__":
    try:
        target = build(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build" / "space")
    except ValueError as err:
        print(f"build_space.py: error: {err}", file=sys.stderr)
        sys.exit(2)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) / 2**20
    print(f"wrote {target} ({size:.0f} MB): deploy it with `cd {target} && gradio deploy`")
