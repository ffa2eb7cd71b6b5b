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


def test_the_top_level_help_imports_no_job():
    # `corpusmill --help` (and a mistyped command) answer at once: neither Beam nor pyarrow is
    # imported before a command is chosen.
    code = ("import sys; from beam_jobs.cli import main; main(['--help']); "
            "print(sorted(m for m in ('apache_beam', 'pyarrow', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("[]"), proc.stdout[-300:] + proc.stderr[-300:]


def test_a_command_starts_with_its_modules_frozen_and_collection_on():
    # The command's imports run with no cyclic collection, then are frozen (no later collection
    # walks them, here or in a forked worker) and collection is back on for the run.
    code = ("import gc, sys; from beam_jobs import cli; "
            "cli._import_without_collecting('beam_jobs.ccnet'); "
            "print(gc.isenabled(), gc.get_freeze_count() > 100000, 'apache_beam' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.split() == ["True", "True", "True"], proc.stdout[-300:] + proc.stderr[-300:]
