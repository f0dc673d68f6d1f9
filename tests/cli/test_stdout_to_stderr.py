"""--json output stays one clean document when an engine's subprocess prints to stdout."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_subprocess_prints_go_to_stderr_and_the_json_stays_clean(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import json, subprocess, sys
        from tokenjoule.cli.options import StdoutToStderr
        with StdoutToStderr(True):
            print("python-level log line")
            subprocess.run([sys.executable, "-c", "print('engine subprocess log line')"], check=True)
        print(json.dumps({"ok": 1}))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"ok": 1}
    assert "python-level log line" in out.stderr and "engine subprocess log line" in out.stderr


def test_disabled_leaves_stdout_alone(tmp_path):
    script = tmp_path / "run.py"
    script.write_text("from tokenjoule.cli.options import StdoutToStderr\n"
                      "with StdoutToStderr(False):\n    print('plain')\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    assert out.stdout == "plain\n" and out.stderr == ""
