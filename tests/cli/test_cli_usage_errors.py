"""Usage errors from the command-line parser are short messages with exit code 2."""

import pytest

from tokenjoule.cli.main import main


@pytest.mark.parametrize("argv", [
    ["measure"],
    ["measure", "--model", "tiny", "--batch", "abc"],
    ["results", "show", "x"],
    ["no-such-command"],
])
def test_parser_errors_exit_2_without_traceback(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Error:" in err


def test_a_file_that_is_not_a_results_database_is_one_line(tmp_path, capsys):
    bad = tmp_path / "notes.db"
    bad.write_text("not sqlite at all\n" * 100)
    assert main(["results", "--db", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a tokenjoule results database" in err and "Traceback" not in err
