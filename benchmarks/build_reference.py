"""Build a shipped reference bin table from a committed results database.

    python benchmarks/build_reference.py                       # the H100 table from h100_evidence.db
    python benchmarks/build_reference.py --db OUT/case_study.db --name h200-llama-3.1-8b --setup hf:eager \
        --setup vllm:graphs --coverage "every occupied default bin of the case-study workloads"

Reads the ok offline cells of one model (and GPU) for the given setups and writes
src/tokenjoule/reference/data/NAME.json: card, date (of the newest cell), versions, the commands
that measured them, and per cell its lengths, batch size, energy and time. Every usable
candidate cell of a bin is kept (the selection rule picks one per request count).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tokenjoule.analysis.reference_table import DEFAULT_COVERAGE, FALLBACK_COMMAND, build_table  # noqa: E402


def build(db: Path, name: str, model: str, setups: list[str], coverage: str, title: str,
          measured_by: list[str] | None = None) -> dict:
    table = build_table(db, name, model, setups, coverage, title,
                        command=" ".join(["python benchmarks/build_reference.py", *sys.argv[1:]]))
    if measured_by:  # cells whose provenance names no command: the caller says what measured them
        table["commands"] = sorted(set(table["commands"]) - {FALLBACK_COMMAND} | set(measured_by))
    return table



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, default=ROOT / "benchmarks/results/h100_evidence.db")
    ap.add_argument("--name", default="h100-llama-3.1-8b")
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--setup", action="append", help="engine:mode[:decoding] (repeatable)")
    ap.add_argument("--coverage", default=DEFAULT_COVERAGE)
    ap.add_argument("--title", default=None)
    ap.add_argument("--measured-by", action="append", metavar="COMMAND",
                    help="the command that measured the cells, when their provenance does not say (repeatable)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "src/tokenjoule/reference/data")
    args = ap.parse_args()
    setups = args.setup or ["hf:eager", "vllm:graphs"]
    title = args.title or f"{args.model} bin table ({', '.join(setups)})"
    table = build(args.db.resolve(), args.name, args.model, setups, args.coverage, title, args.measured_by)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"{args.name}.json"
    path.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {path}: {len(table['cells'])} cells, {table['card']}, {table['date']}")


if __name__ == "__main__":
    main()
