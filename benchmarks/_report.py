"""Write one benchmark's section of docs/benchmarks.md, leaving the other sections alone."""

from __future__ import annotations

import datetime
import math
import os
import platform
import re
import subprocess
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = ("# Benchmarks\n\nEach section is rewritten by the script named in it; "
          "conditions and date are in each section.\n")


def machine() -> str:
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


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in percent."""
    s = sorted(values)
    return s[max(0, min(len(s), math.ceil(q / 100 * len(s))) - 1)]


def load_note() -> str:
    """Machine load, and how many labs / network namespaces exist besides ours (other tests
    may run on the same cores)."""
    from hypetunnel.lab.topology import Lab

    la = os.getloadavg()
    netns = len(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                               check=False).stdout.splitlines())
    return (f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}, other labs "
            f"{len(Lab.list())}, network namespaces {netns}")
