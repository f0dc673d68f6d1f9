"""`tokenjoule sweep` on the command line: dry runs create nothing, errors are one line."""

from __future__ import annotations

import subprocess
import sys

from tokenjoule.cli.main import main

GRID = "model: tiny\ndevice: cpu\ninput_tokens: [8, 16]\noutput_tokens: 4\nbatch: [1, max]\n"


def test_dry_run_creates_no_database(tmp_path, capsys):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(GRID)
    db = tmp_path / "results.db"
    assert main(["sweep", str(cfg), "--db", str(db), "--dry-run"]) == 0
    assert not db.exists()
    assert main(["sweep", "--preset", "paper-moe", "--quick", "--db", str(db), "--dry-run"]) == 0
    assert not db.exists()


def test_config_errors_are_one_line_with_the_line_number(tmp_path, capsys):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text("model: tiny\ninput_tokens: [8, -1]\n")
    assert main(["sweep", str(cfg), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {cfg}:2: input_tokens:") and "\n" not in err


def test_config_or_preset_not_both(tmp_path, capsys):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(GRID)
    assert main(["sweep", str(cfg), "--preset", "paper-moe", "--dry-run"]) == 2
    assert main(["sweep", "--dry-run"]) == 2
    assert main(["sweep", str(cfg), "--model", "tiny", "--dry-run"]) == 2
    assert main(["sweep", "--preset", "paper-all", "--dry-run"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(errors) == 4 and all(line.startswith("error: ") for line in errors)
    assert "valid: paper-lengths" in errors[-1]


def test_sweep_help_and_dry_run_do_not_import_torch(tmp_path):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(GRID)
    code = ("import sys; from tokenjoule.cli.main import main; "
            f"rc = main(['sweep', {str(cfg)!r}, '--db', {str(tmp_path / 'x.db')!r}, '--dry-run']); "
            "main(['sweep', '--help']); print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "NO-TORCH 0", out.stderr
