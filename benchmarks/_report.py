"""Write one benchmark's section of docs/benchmarks.md, leaving the other sections alone."""

from __future__ import annotations

import datetime
import platform
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = ("# Benchmarks\n\nEach section is rewritten by the script named in it; "
          "conditions and date are in each section.\n")


def machine() -> str:
    import os

    return (f"{platform.node()} · {os.cpu_count()} cores · Linux {platform.release()} · "
            f"Python {platform.python_version()}")


def write_section(name: str, title: str, body: str) -> None:
    """Replace (or append) the section between <!-- bench:name --> markers."""
    text = DOC.read_text() if DOC.exists() else HEADER
    stamp = datetime.date.today().isoformat()
    section = (f"<!-- bench:{name} -->\n## {title}\n\n_Run {stamp} by `benchmarks/{name}.py` on "
               f"{machine()}._\n\n{body.strip()}\n<!-- /bench:{name} -->")
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->",
                         re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else (
        text.rstrip() + "\n\n" + section + "\n")
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
