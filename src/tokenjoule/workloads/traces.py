"""Request traces by name or path: the built-in (shipped) traces, loading, and resolution.

`load_trace` returns a `Workload` whose requests carry their exact token counts and an
arrival time in seconds from the first request. The provenance records the source, the
format, how many rows were read and every row removed with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.workloads import formats
from tokenjoule.workloads.request import Request, Workload


@dataclass(frozen=True)
class TraceInfo:
    name: str
    filename: str
    format: str
    description: str
    citation: str
    license: str


BUILTIN_TRACES: dict[str, TraceInfo] = {
    t.name: t
    for t in (
        TraceInfo("azure-code-2023", "AzureLLMInferenceTrace_code.csv", "azure",
                  "Azure LLM inference, code completion, 1 hour (8,819 requests)",
                  "Patel et al., Splitwise, ISCA 2024 (Azure Public Dataset)", "CC-BY-4.0"),
        TraceInfo("azure-conv-2023", "AzureLLMInferenceTrace_conv.csv", "azure",
                  "Azure LLM inference, conversation, 1 hour (19,366 requests)",
                  "Patel et al., Splitwise, ISCA 2024 (Azure Public Dataset)", "CC-BY-4.0"),
        TraceInfo("mooncake-conversation", "conversation_trace.jsonl", "mooncake",
                  "Mooncake (Kimi) conversation, 1 hour (12,031 requests)",
                  "Qin et al., Mooncake, FAST 2025 (kvcache-ai/Mooncake)", "Apache-2.0"),
    )
}

_PARSERS = {
    "azure": formats.parse_azure,
    "mooncake": formats.parse_mooncake,
    "burstgpt": formats.parse_burstgpt,
    "csv": formats.parse_generic_csv,
    "jsonl": formats.parse_generic_jsonl,
}


def list_traces() -> list[str]:
    """Names of the traces shipped with tokenjoule."""
    return list(BUILTIN_TRACES)


def trace_info(name: str) -> TraceInfo:
    if name not in BUILTIN_TRACES:
        raise UnknownNameError("trace", name, list_traces())
    return BUILTIN_TRACES[name]


def _read_source(name_or_path: str | Path) -> tuple[str, bytes, str | None, str]:
    """(display name, raw bytes, known format or None, workload name)."""
    key = str(name_or_path)
    if key in BUILTIN_TRACES:
        info = BUILTIN_TRACES[key]
        data = resources.files("tokenjoule.workloads").joinpath("data", info.filename).read_bytes()
        return info.filename, data, info.format, info.name
    path = Path(key).expanduser()
    if not path.is_file():
        from tokenjoule.workloads.synthetic import list_paper_workloads

        raise UnknownNameError("trace (not a built-in name, task:NAME profile, paper:NAME synthetic workload "
                               "or existing file)", key,
                               list_traces() + [f"task:{t}" for t in _task_names()] + list_paper_workloads())
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenjouleError(f"{path}: cannot read ({exc.strerror})") from None
    return str(path), data, None, path.stem


def _task_names() -> list[str]:
    from tokenjoule.workloads.profiles import TASK_PROFILES

    return list(TASK_PROFILES)


def load_trace(
    name_or_path: str | Path,
    fmt: str | None = None,
    *,
    model: str | None = None,
    log_type: str | None = None,
    columns: dict[str, str] | None = None,
    time_unit: str = "s",
) -> Workload:
    """Load a built-in trace by name or any trace file by path.

    fmt: one of `formats.FORMATS`, or None to detect it from the header / first line.
    model, log_type: BurstGPT filters (an error for other formats, so a filter is never ignored).
    columns, time_unit: the column mapping of generic CSV/JSONL files
    ({"input_tokens": ..., "output_tokens": ..., "arrival_s": ...}).
    """
    source, data, known, name = _read_source(name_or_path)
    text = formats.decode_text(data, source)
    if fmt is not None and fmt not in _PARSERS:
        raise UnknownNameError("trace format", fmt, formats.FORMATS)
    fmt = fmt or known or formats.detect_format(text, source)
    if (model or log_type) and fmt != "burstgpt":
        raise TokenjouleError(f"--model/--log-type filters apply to BurstGPT traces only; {source} is {fmt}")
    kwargs: dict[str, Any] = {}
    if fmt == "burstgpt":
        kwargs = {"model": model, "log_type": log_type}
    elif fmt in ("csv", "jsonl"):
        kwargs = {"columns": columns, "time_unit": time_unit}
    parsed = _PARSERS[fmt](text, source, **kwargs)
    return _to_workload(parsed, name, str(name_or_path), fmt)


def _to_workload(parsed: formats.Parsed, name: str, source: str, fmt: str) -> Workload:
    arrivals = parsed.arrival_s
    sorted_by_arrival = True
    order = range(len(parsed.input_tokens))
    if arrivals:
        t0 = min(arrivals)
        arrivals = [t - t0 for t in arrivals]
        if any(a > b for a, b in zip(arrivals, arrivals[1:])):
            # Replay needs time order; a stable sort keeps the file order of equal times.
            sorted_by_arrival = False
            order = sorted(order, key=arrivals.__getitem__)
    ins, outs = parsed.input_tokens, parsed.output_tokens
    if arrivals:
        requests = [Request(ins[k], outs[k], arrivals[k]) for k in order]
    else:
        requests = [Request(ins[k], outs[k]) for k in order]
    provenance = {
        "source": source,
        "format": fmt,
        "rows_read": parsed.rows_read,
        "removed": dict(parsed.removed),
        "filters": list(parsed.filters),
        "sorted_by_arrival": sorted_by_arrival,
    }
    if parsed.first_timestamp:
        provenance["first_timestamp"] = parsed.first_timestamp
    if name in BUILTIN_TRACES:
        info = BUILTIN_TRACES[name]
        provenance.update(citation=info.citation, license=info.license)
    if not requests:
        raise TokenjouleError(f"{source}: no requests left (read {parsed.rows_read} rows; removed "
                              f"{', '.join(f'{n} {r}' for r, n in parsed.removed.items()) or 'none'})")
    return Workload(name=name, requests=requests, provenance=provenance)


def resolve_workload(spec: str | Path | Workload, **kwargs: Any) -> Workload:
    """A Workload from a trace name, a path, `task:NAME` (a Table-3 task profile) or
    `paper:NAME` (a synthetic workload matched to the paper's Tables 1-2, see synthetic.py).

    Keyword arguments go to `load_trace` (or, for task profiles and paper workloads: n, seed)."""
    if isinstance(spec, Workload):
        return spec
    key = str(spec)
    if key.startswith("task:"):
        from tokenjoule.workloads.profiles import task_profile

        allowed = {k: v for k, v in kwargs.items() if k in ("n", "seed") and v is not None}
        return task_profile(key[len("task:"):], **allowed)
    if key.startswith("paper:"):
        from tokenjoule.workloads.synthetic import paper_workload

        allowed = {k: v for k, v in kwargs.items() if k in ("n", "seed") and v is not None}
        return paper_workload(key, **allowed)
    return load_trace(key, **{k: v for k, v in kwargs.items() if k not in ("n", "seed")})
