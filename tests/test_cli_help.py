"""`vilactl --help` matches the tool: closed sets of values are choices listed in the help and
refused in one line (exit 2), every option says its default, help text flows (no line cut
mid-sentence), commands are listed in pipeline order, and `train --set` is refused in one line
for a bad key, type or bound. Help is rendered in-process with the real app (typer's runner);
errors that go through `main` run the real entry point."""
import re
import subprocess
import sys

import pytest
from conftest import run_cli
from typer.main import get_command
from typer.testing import CliRunner

from vilactl.base import vocab
from vilactl.base.kinds import Kind
from vilactl.pipeline.cli import app
from vilactl.pipeline.cli.help_text import PIPELINE_ORDER, flow

WIDE = {"COLUMNS": "1000"}          # nothing wraps: a line break in the help is the text's own


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(args), env=env or WIDE)


def commands(cmd=None, path=()):
    """(command path, click command) of every leaf command of the app."""
    cmd = cmd or get_command(app)
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from commands(sub, (*path, name))
    else:
        yield path, cmd


ALL = sorted(commands(), key=lambda pc: pc[0])

# (command, option, its values, the arguments a bad value is tried with)
CHOICES = [
    (("train",), "--stage", vocab.STAGE_NAMES, ["train", "--stage"]),
    (("demo",), "--size", vocab.WORLD_SIZES, ["demo", "--size"]),
    (("demo",), "--until", vocab.DEMO_STEPS, ["demo", "--until"]),
    (("world",), "--size", vocab.WORLD_SIZES, ["world", "--out", "w", "--size"]),
    (("download",), "--format", vocab.DOWNLOAD_FORMATS, ["download", "coyo", "--format"]),
    (("download",), "--resize-mode", vocab.RESIZE_MODES, ["download", "coyo", "--resize-mode"]),
    (("blend",), "--mmc4-variant", vocab.MMC4_VARIANTS, ["blend", "--mmc4-variant"]),
    (("build",), "--variant", vocab.MMC4_VARIANTS, ["build", "--variant"]),
    (("build",), "--image-order", vocab.IMAGE_ORDERS,
     ["build", "--variant", "pairs", "--image-order"]),
    (("sql",), "--format", vocab.SQL_FORMATS, ["sql", "SELECT 1", "--format"]),
    (("ablate",), "--study", vocab.ABLATE_STUDIES, ["ablate", "--study"]),
    (("register", "samples"), "--kind", tuple(k.value for k in Kind),
     ["register", "samples", "--data", "x", "--name", "x", "--kind"]),
]
IDS = [" ".join((*c[0], c[1])) for c in CHOICES]


@pytest.mark.parametrize("path, flag, values, _", CHOICES, ids=IDS)
def test_closed_sets_are_choices_listed_in_help(path, flag, values, _):
    out = invoke(*path, "--help").output
    row = next(ln for ln in out.splitlines() if re.search(rf"│\s+(\*\s+)?{flag}\s", ln))
    assert f"<{'|'.join(values)}>" in row, row


@pytest.mark.parametrize("path, flag, values, argv", CHOICES, ids=IDS)
def test_a_bad_choice_is_one_line_and_exit_2(path, flag, values, argv):
    res = invoke(*argv, "bogus")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith(f"error: Invalid value for '{flag}'")
    assert lines[0].endswith(f": 'bogus' is not one of {', '.join(repr(v) for v in values)}. "
                             f"(see vilactl {' '.join(path)} --help)")


def test_the_real_entry_point_refuses_a_bad_choice_in_one_line(tmp_path):
    proc = run_cli("train", "--stage", "finetune", workspace=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and proc.stdout == "" and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: Invalid value for '--stage': 'finetune' is not one of "
                               "'projector', 'pretrain', 'sft'. (see ")   # then the prog name
    assert lines[0].endswith(" train --help)")


def test_vocabulary_is_what_the_code_validates_with():
    # img2dataset's names are read in a child process: importing img2dataset imports Ray, and a
    # Ray imported before conftest's ray_head sets RAY_AUTH_MODE=token never reaches that head
    # (ray.init hung the test_download test that runs in this process after this file).
    names = subprocess.run([sys.executable, "-c", "from img2dataset.resizer import ResizeMode; "
                            "print(' '.join(m.name for m in ResizeMode))"],
                           capture_output=True, text=True, check=True, timeout=120).stdout
    from vilactl.curation.mmc4_variants import VARIANTS
    from vilactl.curation.world import PRESETS
    from vilactl.pipeline.jobs.demo import STEPS
    from vilactl.train.stages import STAGES

    assert tuple(STAGES) == vocab.STAGE_NAMES and tuple(PRESETS) == vocab.WORLD_SIZES
    assert tuple(s.name for s in STEPS) == vocab.DEMO_STEPS
    assert set(vocab.RESIZE_MODES) == set(names.split())
    assert VARIANTS == vocab.MMC4_VARIANTS


# Inputs without a default: one of them is what the command reads.
NO_DEFAULT = {("download", "--metadata"), ("download", "--docs"), ("download", "--from-dataset")}


@pytest.mark.parametrize("path, cmd", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_every_option_says_its_default(path, cmd):
    out = invoke(*path, "--help").output
    shown, in_words = 0, []
    for p in cmd.params:
        if p.required or p.name == "help" or (getattr(p, "is_flag", False)
                                              and not p.secondary_opts):
            continue
        if p.default not in (None, [], ()):
            shown += 1
        elif not p.multiple and (path[-1], p.opts[0]) not in NO_DEFAULT:
            in_words.append((p.opts[0], p.help))
    assert out.count("[default: ") == shown
    assert [o for o, h in in_words if "default" not in h.lower()] == []


def test_computed_defaults_are_said_in_words():
    out = invoke("train", "--help").output
    for flag, words in [("--config", "debug (default)"), ("--steps", "default: from the config"),
                        ("--lora", "default: the config's stage lora"),
                        ("--blend", "default from the config's stage")]:
        assert words in next(ln for ln in out.splitlines() if f" {flag} " in ln), flag


def broken_lines(text: str) -> list[tuple[str, str]]:
    """Pairs of consecutive lines where a sentence was cut: the first ends without
    punctuation and the next continues in lower case."""
    rows = ["" if "─" in ln else ln.strip("│ ") for ln in text.splitlines()]   # no borders
    return [(a, b) for a, b in zip(rows, rows[1:])
            if a and b and not re.search(r"[.:;!?)\]]$", a) and b[0].islower()]


@pytest.mark.parametrize("path", [(), *(p for p, _ in ALL), ("register",), ("mirror",)],
                         ids=lambda p: " ".join(p) or "vilactl")
def test_help_flows_without_lines_cut_mid_sentence(path):
    out = invoke(*path, "--help").output
    assert out.strip() and broken_lines(out) == []


def test_the_check_finds_a_hard_break_and_flow_keeps_paragraphs():
    assert broken_lines("│ Train one stage; loss,   │\n│ tokens/s go to a file.  │") != []
    assert flow("One\n    two.\n\n    Three\n    four.") == "One two.\n\nThree four."


def test_commands_are_listed_in_pipeline_order():
    out = invoke("--help").output
    panel = out.split("Commands")[1]
    listed = [m.group(1) for m in re.finditer(r"^│ (\S+)\s", panel, re.M)]
    assert listed == list(PIPELINE_ORDER)
    assert set(get_command(app).commands) == set(PIPELINE_ORDER)


@pytest.mark.parametrize("override, message", [
    ("train.lr=1e-4", "error: --set train.lr=1e-4: unknown key train.lr (known in train: betas,"),
    ("train.seed=abc", "error: --set train.seed=abc: train.seed must be an integer, got 'abc'"),
    ("train.warmup_ratio=2", "error: --set train.warmup_ratio=2: train.warmup_ratio must be a "
                             "number in [0, 1], got 2"),
])
def test_train_set_refuses_a_bad_key_type_or_bound_in_one_line(tmp_path, override, message):
    proc = run_cli("train", "--stage", "pretrain", "--set", override, workspace=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith(message), lines[0]
    assert not (tmp_path / "checkpoints" / "pretrain").exists()
