"""The sweep's progress bar (cells done / total, calibrated ETA, current cell): a
runs.sweep.SweepProgress drawn with rich. Drawing lives here so the core never imports rich."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class SweepBar:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.bar: Progress | None = None
        self.task: Any = None

    def start(self, total: int) -> None:
        self.bar = Progress(
            TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"), TextColumn("{task.fields[cell]}"),
            console=self.console, transient=False,
        )
        self.task = self.bar.add_task("sweep", total=total, eta="?", cell="")
        self.bar.start()

    def update(self, *, advance: int = 0, eta_s: float | None = None, cell: str | None = None) -> None:
        if self.bar is None:
            return
        from tokenjoule.runs.sweep_estimate import format_duration

        fields: dict[str, Any] = {}
        if eta_s is not None:
            fields["eta"] = format_duration(eta_s)
        if cell is not None:
            fields["cell"] = cell
        self.bar.update(self.task, advance=advance, **fields)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
