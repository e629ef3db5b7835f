"""Where benchmark tables go: benchmarks/results/<name>[_quick].md, also printed."""
from __future__ import annotations

import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def write_table(name: str, lines: list[str], quick: bool) -> str:
    text = "\n".join(lines)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{name}_quick.md" if quick else f"{name}.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return text
