import subprocess
import sys

from argen.cli import main


def test_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    assert "presets" in out


def test_errors_are_one_line_without_traceback():
    r = subprocess.run([sys.executable, "-m", "argen", "presets", "no-such-preset"], capture_output=True, text=True)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "unknown preset" in r.stderr
