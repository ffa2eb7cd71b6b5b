import subprocess
import sys

from beam_jobs.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_every_command_has_help():
    for name in COMMANDS:
        proc = subprocess.run([sys.executable, "-m", "beam_jobs.cli", name, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0 and "usage: corpusmill " + name in proc.stdout, (name, proc.stderr[-500:])


def test_unknown_command(capsys):
    try:
        main(["frobnicate"])
    except SystemExit as e:
        assert e.code == 2
    assert "unknown command" in capsys.readouterr().err
