"""Progress in a pipe or a log file: rich draws no live bar there, so each step is one line."""

from __future__ import annotations

import io

from rich.console import Console

from tokenjoule.cli.measure import RichProgress


def test_progress_into_a_file_prints_one_line_per_step():
    buf = io.StringIO()
    with RichProgress(Console(file=buf, force_terminal=False)) as progress:
        progress("warmup", 1, 1)
        progress("replay", 1, 3)
        progress("replay", 3, 3)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    assert len(lines) == 3
    assert lines[1].endswith("s)") and ": 1/3 (" in lines[1] and ": 3/3 (" in lines[2]


def test_progress_on_a_terminal_draws_no_plain_lines():
    buf = io.StringIO()
    with RichProgress(Console(file=buf, force_terminal=True, width=80)) as progress:
        progress("replay", 1, 3)
    assert ": 1/3 (" not in buf.getvalue()
