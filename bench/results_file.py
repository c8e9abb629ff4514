"""bench/RESULTS.md: each benchmark owns one section between its own markers, replaced on each run;
the other sections are kept as they are."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(title: str, start: str, end: str, report: str, results: Path = RESULTS) -> None:
    body = f"{start}\n{report}\n{end}"
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + body + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n{title}\n\n" + body + "\n"
    results.write_text(text)
