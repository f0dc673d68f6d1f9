"""`tokenjoule measure`: measure one cell (model x engine/mode x decoding x batch x lengths).

Only light packages are imported here; the runner (and with it torch) is imported inside
the command so that `tokenjoule --help` stays fast.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from tokenjoule.cli.options import db_option, resolve_db

DEFAULT_OUTPUT_TOKENS = 64
TP_HELP = ("Tensor-parallel GPUs: vllm starts its own workers; hf runs one torch.distributed rank per GPU "
           "(started by tokenjoule). The meter reads every GPU of the set.")
PP_HELP = "Pipeline-parallel stages (vllm only); the cell uses tp x pp GPUs."

PHASE_LABELS = {
    "warmup": "warming up", "calibrate": "timing one batch", "measure": "measuring",
    "prefill-warmup": "prefill: warming up", "prefill-calibrate": "prefill: timing one batch",
    "prefill-measure": "prefill: measuring",
}

# (metric, label, format) rows of the result table, in reading order.
METRIC_ROWS: list[tuple[str, str, str]] = [
    ("energy_j", "energy per batch (J)", "{:.4g}"),
    ("energy_cv", "energy CV over repeats", "{:.2%}"),
    ("energy_per_request_j", "energy per request (J)", "{:.4g}"),
    ("energy_per_output_token_j", "energy per output token (J)", "{:.4g}"),
    ("energy_per_token_j", "energy per token, in+out (J)", "{:.4g}"),
    ("active_energy_j", "active energy per batch, above idle (J)", "{:.4g}"),
    ("idle_power_w", "idle power (W)", "{:.4g}"),
    ("avg_power_w", "average power (W)", "{:.4g}"),
    ("duration_s", "latency per batch (s)", "{:.4g}"),
    ("duration_cv", "latency CV over repeats", "{:.2%}"),
    ("throughput_tokens_per_s", "throughput (output tokens/s)", "{:.4g}"),
    ("ttft_s", "time to first token, est. (s)", "{:.4g}"),
    ("prefill_energy_j", "prefill energy (J)", "{:.4g}"),
    ("decode_energy_j", "decode energy (J)", "{:.4g}"),
    ("timeline_energy_j", "timeline-integrated energy (J)", "{:.4g}"),
    ("timeline_disagreement", "timeline vs counter", "{:+.2%}"),
    ("cpu_energy_j", "CPU package energy (J)", "{:.4g}"),
    ("dram_energy_j", "DRAM energy (J)", "{:.4g}"),
    ("acceptance_rate", "draft acceptance rate", "{:.2%}"),
    ("iterations_per_window", "batches per window", "{}"),
    ("repeats", "windows (repeats)", "{}"),
    ("method", "method", "{}"),
]


class RichProgress:
    """Shows the runner's phases as a rich progress bar on stderr (stdout stays for --json).

    Redrawn only when the runner reports a batch (auto_refresh off): rich's auto-refresh is a
    thread that re-renders the bar 10 times a second inside the measured process, taking the
    interpreter lock from CPU-bound eager decode (docs/METHOD.md, "Meter overhead")."""

    def __init__(self, console: Console | None = None, prefix: str = "", auto_refresh: bool = False):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.prefix = prefix
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console or Console(stderr=True), transient=True,
                                 auto_refresh=auto_refresh)
        self._tasks: dict[str, Any] = {}
        self._started_s: float | None = None  # first step's time, for the plain lines of a non-terminal

    def __enter__(self) -> "RichProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def __call__(self, phase: str, done: int, total: int) -> None:
        key = self.prefix + phase
        console = self.progress.console
        if not console.is_terminal:
            # rich draws no live bar into a pipe or a log file: one plain line per step instead,
            # so a long run's log says how far it got (and where it stopped, if it was killed).
            import time

            if self._started_s is None:
                self._started_s = time.monotonic()
            label = f"{self.prefix}{PHASE_LABELS.get(phase, phase)}"
            console.print(f"{label}: {done}/{total} ({time.monotonic() - self._started_s:.0f} s)", markup=False,
                          highlight=False, soft_wrap=True)
            console.file.flush()
            return
        if key not in self._tasks or self.progress.tasks[self._tasks[key]].total != total:
            self._tasks[key] = self.progress.add_task(f"{self.prefix}{PHASE_LABELS.get(phase, phase)}", total=total)
        self.progress.update(self._tasks[key], completed=done, refresh=True)


def format_value(value: Any, fmt: str = "{:.4g}", missing: str = "n/a") -> str:
    """A number for a table cell; `missing` stands for None (a value that was not measured)."""
    if value is None:
        return missing
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def metrics_table(record: Any, title: str | None = None) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    m = record.metrics
    for key, label, fmt in METRIC_ROWS:
        if key in m and not (m[key] is None and key in ("acceptance_rate",)):
            value = format_value(m[key], fmt)
            reason = m.get(key.replace("_j", "_reason")) if m[key] is None and key.endswith("_energy_j") else None
            table.add_row(label, f"{value} ({reason})" if reason else value)
    if m.get("energy_j") is None and m.get("energy_reason"):
        table.add_row("energy missing because", m["energy_reason"])
    flags = m.get("flags") or []
    table.add_row("flags", "[bold yellow]" + ", ".join(flags) + "[/]" if flags else "none")
    if "estimate" in flags:
        table.caption = "[yellow]energies are estimates (no energy sensor); see docs/METHOD.md[/]"
    return table


def pick_output_tokens(new: Optional[int], old: Optional[int]) -> int:
    """--output-tokens, or the older `-o/--output N` of `measure` (kept so scripts keep working;
    everywhere else -o is an output path, so a note says so)."""
    from tokenjoule.errors import TokenjouleError

    if new is not None and old is not None and new != old:
        raise TokenjouleError(f"--output-tokens {new} and -o/--output {old} disagree; give --output-tokens only")
    value = new if new is not None else old
    return DEFAULT_OUTPUT_TOKENS if value is None else value


def check_model_name(name: str) -> None:
    """Raise UnknownNameError (listing the presets) for a name that is neither a preset nor an HF id."""
    from tokenjoule.models.registry import resolve_model

    resolve_model(name)


def build_spec(**kw: Any):
    """A RunSpec from CLI values (RunSpec/DecodingSpec validate names and ranges)."""
    from tokenjoule.spec import DecodingSpec, RunSpec

    decoding: dict[str, Any] = {"strategy": kw.pop("decoding")}
    for cli_name, field in (("temperature", "temperature"), ("top_p", "top_p"), ("num_beams", "num_beams"),
                            ("draft_model", "draft_model"), ("lookahead", "lookahead_tokens")):
        value = kw.pop(cli_name, None)
        if value is not None:
            decoding[field] = value
    spec = RunSpec(decoding=DecodingSpec(**decoding), **kw)
    from tokenjoule.models.registry import check_context

    check_context(spec.model, spec.input_tokens, spec.output_tokens)
    return spec


def record_json(record: Any, samples: bool = False) -> str:
    data = record.to_dict()
    if not samples and isinstance(data.get("measurement"), dict):
        data["measurement"] = {**data["measurement"], "samples": []}
    return json.dumps(data, indent=2, default=str)


def register(app: typer.Typer) -> None:
    @app.command()
    def measure(
        ctx: typer.Context,
        model: str = typer.Option(..., "--model", "-m", help="Preset name (random weights) or Hugging Face id."),
        engine: str = typer.Option("hf", help="Inference engine: hf | vllm."),
        mode: str = typer.Option("eager", help="Engine mode: hf eager|compile|cudagraphs; vllm eager|graphs."),
        batch: int = typer.Option(8, "--batch-size", "--batch", "-b", help="Requests per batch."),
        input_tokens: int = typer.Option(512, "--input-tokens", "--input", "-i", help="Input tokens per request."),
        output_tokens: Optional[int] = typer.Option(None, "--output-tokens", help="Output tokens per request "
                                                    "[default: 64]."),
        output_old: Optional[int] = typer.Option(None, "--output", "-o", hidden=True,
                                                 help="Old spelling of --output-tokens (kept for scripts)."),
        decoding: str = typer.Option("greedy", help="greedy | sample | beam | speculative."),
        temperature: Optional[float] = typer.Option(None, help="Sampling temperature (sample)."),
        top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus sampling top-p (sample)."),
        num_beams: Optional[int] = typer.Option(None, "--num-beams", help="Beams (beam)."),
        draft_model: Optional[str] = typer.Option(None, "--draft-model", help="Draft preset or id, or self (the target drafts for itself; speculative)."),
        lookahead: Optional[int] = typer.Option(None, help="Draft tokens proposed per step (speculative)."),
        repeats: int = typer.Option(3, help="Measurement windows."),
        warmup: int = typer.Option(3, help="Warm-up batches (never measured)."),
        idle_s: float = typer.Option(5.0, "--idle-s", help="Seconds of idle power measured before loading."),
        min_window_s: float = typer.Option(2.0, "--min-window-s", help="Repeat the batch inside a window up to this."),
        split_prefill: bool = typer.Option(True, "--split-prefill/--no-split-prefill",
                                           help="Also measure a 1-token batch for the prefill/decode split."),
        device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
        dtype: str = typer.Option("auto", help="auto | bfloat16 | float16 | float32."),
        seed: int = typer.Option(0, help="Seed of the synthetic prompts and sampling."),
        tensor_parallel: int = typer.Option(1, "--tensor-parallel", "--tp", help=TP_HELP),
        pipeline_parallel: int = typer.Option(1, "--pipeline-parallel", "--pp", help=PP_HELP),
        meter: str = typer.Option("auto", help="Energy meter: auto | nvml | estimate | simulated."),
        db: Optional[str] = db_option(),
        as_json: bool = typer.Option(False, "--json", help="Print the stored record as JSON."),
        samples: bool = typer.Option(False, "--samples", help="With --json: include the power timeline."),
    ) -> None:
        """Measure the energy and latency of one batch configuration and store the result.

        Lengths: --input-tokens, --output-tokens, --batch-size (the sweep YAML's input_tokens,
        output_tokens, batch_size). The older --input/-i, --batch/-b and --output/-o still work."""
        output_tokens = pick_output_tokens(output_tokens, output_old)
        db = resolve_db(ctx, db).path
        spec = build_spec(model=model, engine=engine, mode=mode, batch_size=batch, input_tokens=input_tokens,
                          output_tokens=output_tokens, decoding=decoding, temperature=temperature, top_p=top_p,
                          num_beams=num_beams, draft_model=draft_model, lookahead=lookahead, repeats=repeats,
                          warmup=warmup, min_window_s=min_window_s, split_prefill=split_prefill, device=device,
                          dtype=dtype, seed=seed, tensor_parallel=tensor_parallel,
                          pipeline_parallel=pipeline_parallel)
        check_model_name(spec.model)
        if spec.decoding.draft_model and spec.decoding.draft_model != "self":  # "self": the target drafts
            check_model_name(spec.decoding.draft_model)
        from tokenjoule.limits import MAX_IDLE_S, check_range

        check_range("--idle-s", idle_s, 0, MAX_IDLE_S)
        from tokenjoule.energy import METER_KINDS
        from tokenjoule.errors import UnknownNameError

        if meter not in METER_KINDS:  # checked before the store file is created
            raise UnknownNameError("meter", meter, METER_KINDS)

        from tokenjoule.engines.base import check_parallel
        from tokenjoule.models.preflight import preflight

        check_parallel(spec)  # hf has no pipeline parallelism: one line before anything loads
        preflight(spec)  # device, memory, context: one line and exit 2 before anything loads or is stored
        if output_old is not None:  # after every check, so an error stays one line
            Console(stderr=True).print("[dim]note: measure -o/--output N is the old spelling of --output-tokens N "
                                       "(elsewhere -o is an output path)[/]")

        from tokenjoule.runs.offline import run_measure
        from tokenjoule.store.db import ResultStore

        err = Console(stderr=True)
        err.print(f"measuring [bold]{spec.label}[/]; results go to {db}")
        from tokenjoule.cli.options import StdoutToStderr

        with StdoutToStderr(as_json), ResultStore(db) as store, RichProgress(err) as progress:
            record = run_measure(spec, store, meter_kind=meter, idle_s=idle_s, on_progress=progress)
        if as_json:
            typer.echo(record_json(record, samples))
            return
        out = Console()
        out.print(metrics_table(record, title=f"{spec.label}  (cell #{record.id} in {db})"))
