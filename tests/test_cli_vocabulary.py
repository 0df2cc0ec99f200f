"""One CLI vocabulary: --preset (how long) versus a simulated board (sim:<board>,
--simulate-boards), --device a device spec and --device-uid an identity, --run RUN_ID; old
spellings accepted with one deprecation line; every option has a help line; the top-level
help says what to run first."""

from __future__ import annotations

import argparse

import pytest

from agents.cli_args import DeprecatedAlias
from cluster.cli import build_parser, main


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for the parser and every sub-parser under it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))


def _all_parsers():
    return list(_walk(build_parser()))


def _options(parser):
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def test_the_walk_reaches_every_command():
    commands = {" ".join(path) for path, _ in _all_parsers()}
    for expected in ("run", "suite", "plot", "export", "analyze", "verdict", "import tr122", "bench fleet", "devices"):
        assert expected in commands


def test_every_option_and_command_has_a_help_line():
    missing = []
    for path, parser in _all_parsers():
        for action in _options(parser):
            name = "/".join(action.option_strings) or action.dest
            if action.help == argparse.SUPPRESS:
                if not isinstance(action, DeprecatedAlias):  # only old spellings may hide
                    missing.append(f"fleetphysics {' '.join(path)} {name}: hidden but not a deprecated alias")
            elif not (action.help or "").strip():
                missing.append(f"fleetphysics {' '.join(path)} {name}")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"fleetphysics {' '.join(path)} {c.dest}: no command help"
                            for c in action._choices_actions if not (c.help or "").strip()]
    assert not missing, "\n".join(missing)


def test_the_old_words_are_gone_from_every_help():
    for path, parser in _all_parsers():
        text = parser.format_help()
        for old in ("--profile", "--simulate-profiles", "--run-id", "sim:PROFILE"):
            if old in text:
                # named only as what a new option was formerly called
                assert f"formerly {old}" in text and text.count(old) == text.count(f"formerly {old}"), \
                    f"fleetphysics {' '.join(path)} --help names {old}"


def test_device_is_always_a_spec_and_run_ids_are_taken_by_run():
    for path, parser in _all_parsers():
        for action in _options(parser):
            if action.help == argparse.SUPPRESS:
                continue
            if "--device" in action.option_strings:
                assert action.metavar == "SPEC" and "sim:" in action.help, f"{path}: --device is not a device spec"
            if action.metavar == "DEVICE_UID":
                assert action.option_strings == ["--device-uid"], f"{path}: a device_uid option is not --device-uid"
            if action.metavar == "RUN_ID":
                assert action.option_strings == ["--run"], f"{path}: a run id is not taken by --run"


def test_top_level_help_says_what_to_run_first(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    start = out.index("start here")
    assert out.index("make run", start) < out.index("fleetphysics dashboard", start)
    assert "--preset" in out and "--simulate-boards" in out and "--device-uid" in out


# old spelling, new spelling, the new option's dest and the value it should hold
DEPRECATED = [
    (["suite", "--device", "sim:h100-sxm", "--profile", "quick"], "--profile", "--preset", "preset", "quick"),
    (["run", "--profile", "full"], "--profile", "--preset", "preset", "full"),
    (["bench", "fleet", "--profile", "quick"], "--profile", "--preset", "preset", "quick"),
    (["run", "--simulate-profiles", "rtx4090,h100-sxm"], "--simulate-profiles", "--simulate-boards",
     "simulate_boards", "rtx4090,h100-sxm"),
    (["export", "--run", "r1", "--out", "o", "--device", "dev-1"], "--device", "--device-uid", "device_uid", "dev-1"),
    (["analyze", "--run", "r1", "--device", "dev-1"], "--device", "--device-uid", "device_uid", "dev-1"),
]


@pytest.mark.parametrize("argv,old,new,dest,value", DEPRECATED, ids=[" ".join(d[0][:2]) + " " + d[1] for d in DEPRECATED])
def test_an_old_spelling_works_with_one_deprecation_line(argv, old, new, dest, value, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and old in err[0] and new in err[0] and "deprecated" in err[0]


def test_the_new_spellings_print_no_note(capsys):
    parser = build_parser()
    args = parser.parse_args(["run", "--preset", "quick", "--simulate-boards", "rtx4090"])
    assert (args.preset, args.simulate_boards) == ("quick", "rtx4090")
    args = parser.parse_args(["export", "--run", "r1", "--out", "o", "--device-uid", "dev-1"])
    assert (args.run, args.device_uid) == ("r1", "dev-1")
    assert capsys.readouterr().err == ""


def test_an_unknown_preset_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--preset", "long"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--preset" in err[0] and "smoke" in err[0]


def test_export_takes_the_old_positional_run_with_a_note_and_refuses_a_disagreement(tmp_path, capsys):
    args = build_parser().parse_args(["export", "r1", "--out", "o"])
    assert args.run_positional == "r1"
    assert "--run RUN_ID" in capsys.readouterr().err
    wh = str(tmp_path / "none.duckdb")
    assert main(["export", "r1", "--run", "r2", "--out", str(tmp_path / "o"), "--warehouse", wh]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "disagree" in err[-1] and len(err) == 2  # the note, then the one-line error
    assert main(["export", "--out", str(tmp_path / "o"), "--warehouse", wh]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --run RUN_ID" in err[0]


@pytest.mark.parametrize("make", ["missing", "empty", "no_artifacts"])
def test_plot_on_a_missing_or_empty_dir_is_one_line_exit_2(make, tmp_path, capsys):
    target = tmp_path / "run"
    if make != "missing":
        target.mkdir()
    if make == "no_artifacts":
        (target / "notes.txt").write_text("nothing to plot")
    assert main(["plot", str(target)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and str(target) in err[0] and captured.out == ""
