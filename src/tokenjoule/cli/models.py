"""`tokenjoule models`: the architecture presets and their sizes.

    tokenjoule models [--json]

Counts come from the architecture (models/architecture.py), so no model is built and torch
is not imported. `source` is the Hugging Face repository each preset's config was taken from
(models/presets/SOURCES.md).
"""

from __future__ import annotations

from typing import Any

import typer


def preset_rows() -> list[dict[str, Any]]:
    """One dict per preset: sizes and shape fields, plus the source repository."""
    from tokenjoule.models.architecture import architecture_from_config
    from tokenjoule.models.registry import list_presets, load_preset_config, preset_sources

    sources = preset_sources()
    rows = []
    for name in list_presets():
        cfg = load_preset_config(name)
        arch = architecture_from_config(cfg)
        rows.append(
            {
                "name": name,
                "model_type": arch.model_type,
                "params_total": arch.params_total,
                "params_active": arch.params_active,
                "num_layers": arch.num_layers,
                "hidden_size": arch.hidden_size,
                "num_attention_heads": arch.num_attention_heads,
                "num_kv_heads": arch.num_kv_heads,
                "head_dim": arch.head_dim,
                "intermediate_size": arch.intermediate_size,
                "vocab_size": arch.vocab_size,
                "num_experts": arch.num_experts,
                "experts_per_token": arch.experts_per_token,
                "tie_word_embeddings": arch.tie_word_embeddings,
                "kv_bytes_per_token_bf16": arch.kv_bytes_per_token(2),
                "max_position_embeddings": cfg.get("max_position_embeddings"),
                "source": sources.get(name),  # None for the synthetic test preset
            }
        )
    return rows


def _human(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def models(
    as_json: bool = typer.Option(False, "--json", help="Print JSON (exact counts) instead of a table."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV (exact counts) instead of a table."),
) -> None:
    """List the model presets (real-size architectures built with random weights)."""
    from tokenjoule.cli.options import emit_rows

    rows = preset_rows()
    if emit_rows(rows, as_json, as_csv):
        return
    from rich.console import Console
    from rich.table import Table

    from rich import box

    # Sized for an 80-column terminal; the source repositories follow in a second table.
    table = Table(title="Model presets (random weights)", box=None, padding=(0, 1), pad_edge=False, collapse_padding=True)
    for col in ("preset", "params", "active", "layers", "hidden", "heads/kv", "vocab", "experts", "KV/tok"):
        table.add_column(col, justify="left" if col == "preset" else "right", no_wrap=True)
    sources = Table(box=None, padding=(0, 1), pad_edge=False, collapse_padding=True)
    sources.add_column("preset", no_wrap=True)
    sources.add_column("config taken from (Hugging Face repository)", overflow="fold")
    for r in rows:
        experts = f"{r['experts_per_token']}/{r['num_experts']}" if r["num_experts"] else "-"
        table.add_row(
            r["name"], _human(r["params_total"]), _human(r["params_active"]), str(r["num_layers"]),
            str(r["hidden_size"]), f"{r['num_attention_heads']}/{r['num_kv_heads']}", str(r["vocab_size"]),
            experts, f"{r['kv_bytes_per_token_bf16'] / 1024:g}",
        )
        sources.add_row(r["name"], r["source"] or "(synthetic test preset)")
    console = Console()
    console.print(table)
    console.print()
    console.print(sources)
    console.print("KV/tok: KiB of bf16 KV cache per token. Exact counts: tokenjoule models --json. Any Hugging Face id (org/name) also works as a model.")


def register(app: typer.Typer) -> None:
    app.command("models")(models)
