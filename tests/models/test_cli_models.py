"""`tokenjoule models`."""

from __future__ import annotations

import json
import subprocess
import sys

from tokenjoule.cli.main import main
from tokenjoule.models.architecture import architecture_from_config
from tokenjoule.models.registry import list_presets, load_preset_config


def test_json_lists_every_preset_with_exact_counts(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_presets()
    by_name = {r["name"]: r for r in rows}
    for name in list_presets():
        arch = architecture_from_config(load_preset_config(name))
        assert by_name[name]["params_total"] == arch.params_total
        assert by_name[name]["params_active"] == arch.params_active
    assert by_name["olmoe-1b-7b"]["num_experts"] == 64
    assert by_name["olmoe-1b-7b"]["params_active"] < by_name["olmoe-1b-7b"]["params_total"]
    assert by_name["llama-3.1-8b"]["source"] == "meta-llama/Llama-3.1-8B"
    assert by_name["tiny"]["source"] is None


def test_table_names_every_preset(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in list_presets():
        assert name in out


def test_models_command_does_not_import_torch():
    code = (
        "import sys; from tokenjoule.cli.main import main; main(['models', '--json']); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
