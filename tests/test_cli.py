import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from signbart.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]

SUBCOMMANDS = ["synth", "import-pkl", "extract", "train", "evaluate", "predict", "sweep", "report",
               "compare"]


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and all(c in out for c in SUBCOMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "usage: signbart " + command in capsys.readouterr().out


def test_bad_usage_exits_2():
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "x"])
    assert e.value.code == 2


def test_user_mistakes_are_one_line_on_stderr_with_exit_2(tmp_path):
    cases = [
        (["train", "--config", str(tmp_path / "missing.yaml"), "--data", str(tmp_path),
          "--holdout", "u", "--out", str(tmp_path / "r")], "missing.yaml: cannot read"),
        (["import-pkl", str(tmp_path), str(tmp_path / "o")], "refusing to unpickle"),
        (["train", "--config", "configs/arabic-asl-65kpts.yaml", "--data", str(tmp_path / "nope"),
          "--holdout", "u", "--out", str(tmp_path / "r")], "nope: dataset directory not found"),
    ]
    for argv, message in cases:
        p = subprocess.run([sys.executable, "-m", "signbart.cli", *argv], capture_output=True,
                           text=True, cwd=__file__.rsplit("/tests/", 1)[0])
        assert p.returncode == 2, p.stderr
        assert message in p.stderr and "Traceback" not in p.stderr
        assert p.stderr.strip().splitlines()[-1].startswith("signbart ")


def test_synth_then_train_override_validation(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "d"), "--signers", "2", "--classes", "3", "--reps", "1"]) == 0
    assert "wrote synthetic dataset" in capsys.readouterr().out
    code = main(["train", "--config", "configs/arabic-asl-65kpts.yaml", "--data", str(tmp_path / "d"),
                 "--holdout", "user01", "--out", str(tmp_path / "r"), "--set", "train.augment.bogus=1"])
    assert code == 2 and "unknown key 'bogus'" in capsys.readouterr().err


def documented_commands(path: Path) -> list[list[str]]:
    """Every concrete ``signbart SUBCOMMAND ...`` written in ``path`` (cluster.yaml's comments
    included), as argv; synopses with placeholders (``[--x N]``, ``FILE``) are left out."""
    text = path.read_text().replace("\\\n", " ")
    if path.suffix == ".yaml":
        text = re.sub(r"\n#\s+", "\n", text)
    found = []
    for m in re.finditer(r"(?<![\w/.-])signbart ([^`\n]*)", text):
        if m.group(1).split(" ", 1)[0] not in SUBCOMMANDS:
            continue                                   # prose: "signbart process (PID N)"
        argv = shlex.split(re.split(r"\s(?:&&|\|\||;|#)\s|'|$", m.group(1))[0])
        if (len(argv) > 1 and not any(
                re.search(r"[\[|…<]|\.\.\.|^[A-Z][A-Z_.]*$", a) for a in argv)):
            found.append(argv)
    return found


def test_every_documented_command_parses():
    """README.md, sweeps/README.md, cluster.yaml and cluster-fake.yaml: each command as
    written is accepted by the real parser (a renamed or removed option fails here)."""
    n = 0
    for name in ("README.md", "sweeps/README.md", "cluster.yaml", "cluster-fake.yaml"):
        for argv in documented_commands(REPO / name):
            try:
                build_parser().parse_args(argv)
            except SystemExit:
                pytest.fail(f"{name}: `signbart {shlex.join(argv)}` does not parse")
            n += 1
    assert n >= 20


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_option_has_help_and_shows_its_default(command, capsys):
    """Each option of each subcommand: help text, and its default in --help (a flag, or an
    option whose default is worked out at run time, says it in its own words)."""
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings or action.dest}: no help"
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for action in sub._actions:
        if action.option_strings and action.nargs != 0 and action.default is not None:
            assert f"default: {action.default}" in text or "default" in action.help, action.dest
