"""`llamaforge <command>`: a mapping from command name to (typed arguments, function), nothing more.

Each command's arguments are a dataclass; `tyro` turns its fields into `--flags` with their
docstrings as help. `--config FILE` (YAML or JSON with the same keys as the flags) supplies values
that flags on the command line override. A `UserError` is printed as one line, exit status 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib.metadata
import io
import json
import os
import re
import signal
import sys
import textwrap
from pathlib import Path

import tyro
import yaml

from llamaforge import annotate, carbon, chat, convert, pipeline, report, tokenizer
from llamaforge.eval import reward as eval_reward
from llamaforge.train import pretrain, reward, sft
from llamaforge.train.distributed import launched_world_size
from llamaforge.errors import UserError
from llamaforge.rlhf import distill, gatt, ppo, rejection_sampling
from llamaforge.world import export as world_export
from llamaforge.world.pretrain_default import pretrain_main

COMMANDS = {
    "pipeline": (pipeline.PipelineArgs, pipeline.main),
    "pretrain": (pretrain.PretrainArgs, pretrain_main),  # no --data: the world's corpus
    "sft": (sft.SftArgs, sft.main),
    "annotate": (annotate.AnnotateArgs, annotate.main),
    "reward": (reward.RewardArgs, reward.main),
    "score": (eval_reward.ScoreArgs, eval_reward.score_main),
    "rejection-sampling": (rejection_sampling.RejectionSamplingArgs, rejection_sampling.main),
    "ppo": (ppo.PpoArgs, ppo.main),
    "gatt": (gatt.GattArgs, gatt.main),
    "distill": (distill.DistillArgs, distill.main),
    "eval": {"reward": (eval_reward.EvalRewardArgs, eval_reward.main)},
    "tokenizer": {"train": (tokenizer.TokenizerTrainArgs, tokenizer.train_main)},
    "generate": (chat.GenerateArgs, chat.generate_main),
    "chat": (chat.ChatArgs, chat.chat_main),
    "convert": (convert.ConvertArgs, convert.main),
    "world": {"export": (world_export.ExportArgs, world_export.main)},
    "carbon": (carbon.CarbonArgs, carbon.main),
    "report": (report.ReportArgs, report.main),
}


def flag(name: str) -> str:
    """The command-line flag of an argument field: max_new_tokens -> --max-new-tokens."""
    return "--" + name.replace("_", "-")


def is_positional(field: dataclasses.Field) -> bool:
    return "Positional" in str(field.type)


def config_file_flags(path: Path, args_type: type) -> list[str]:
    """Command-line flags equivalent to a YAML/JSON config file's keys."""
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot parse ({str(err).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of option names to values")
    fields = {f.name for f in dataclasses.fields(args_type)}
    flags = []
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise UserError(f"{path}: unknown key '{key}' (known: {', '.join(sorted(fields))})")
        if isinstance(value, bool):
            flags.append(flag(name) if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, list):
            flags += [flag(name), *map(str, value)]
        elif value is not None:
            flags += [flag(name), str(value)]
    return flags


def preset_defaults(args_type: type, argv: list[str]):
    """The defaults `--preset NAME` selects, for argument types that have presets (else None)."""
    presets = getattr(args_type, "PRESETS", None)
    if not presets:
        return None
    name = next((f.default for f in dataclasses.fields(args_type) if f.name == "preset"), None)
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
    if name not in presets:
        raise UserError(f"--preset {name!r}: unknown (known: {', '.join(presets)})")
    return presets[name]()


# Bounds a flag has wherever it appears, checked once before a command starts work: a zero batch
# size or a negative step count is then one line naming the flag, not a traceback from deep inside
# the loop (or, worse, a run that "succeeds" with nothing trained). Zero stays allowed where it
# means something: max_steps and epochs 0 (derive them / the preset's), lr 0 (the preset's),
# temperature 0 (greedy), eval_every 0 (only at the end), keep_last 0 (the newest checkpoint only).
AT_LEAST_ONE = ("batch_size", "micro_batch_size", "mini_batch_size", "batch_tokens", "seq_len", "max_len",
                "max_new_tokens", "k", "responses", "responses_per_prompt", "batch_prompts", "batch_dialogs", "dialogs",
                "max_turns", "candidates", "ppo_epochs", "val_size", "log_every", "save_every", "vocab_size",
                "num_devices")
NOT_NEGATIVE = ("max_steps", "epochs", "lr", "temperature", "eval_every", "weight_decay", "grad_clip", "beta",
                "plain_dialogs", "patience", "kl_budget", "min_gain", "clip", "value_clip", "lora_rank", "keep_last")
UP_TO_ONE = ("top_p",)  # in (0, 1]
UNIT_INTERVAL = ("gamma", "lam")  # in [0, 1]: GAE's lam 0 is the one-step TD advantage


def check_bounds(args) -> None:
    """A UserError naming the first flag of `args` outside its bounds (the tables above)."""
    for name in AT_LEAST_ONE + NOT_NEGATIVE + UP_TO_ONE + UNIT_INTERVAL:
        value = getattr(args, name, None)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        option = flag(name)
        if name in AT_LEAST_ONE and value < 1:
            raise UserError(f"{option} {value}: must be at least 1")
        if name in NOT_NEGATIVE and value < 0:
            raise UserError(f"{option} {value}: must not be negative")
        if name in UP_TO_ONE and not 0 < value <= 1:
            raise UserError(f"{option} {value}: must be in (0, 1]")
        if name in UNIT_INTERVAL and not 0 <= value <= 1:
            raise UserError(f"{option} {value}: must be in [0, 1]")
    out = getattr(args, "out", None)
    if isinstance(out, Path) and out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; expected a directory")


def missing_flags(args_type: type, argv: list[str]) -> list[str]:
    """The flags of `args_type`'s required options (no default; positionals aside) absent from `argv`:
    named in one line by `parse`, as every command names its other bad input."""
    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    required = [f for f in dataclasses.fields(args_type) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING and not is_positional(f)]
    return [flag(f.name) for f in required if flag(f.name) not in given]


def missing_positionals(args_type: type, argv: list[str]) -> list[str]:
    """The positional arguments of `args_type` (named as --help shows them) that `argv` cannot hold:
    fewer words not starting with '-' than positionals. A lower bound (a flag's value is a word
    too), enough for the common case of a command typed without its directory."""
    names = [f.name.upper() for f in dataclasses.fields(args_type) if is_positional(f)]
    words = [arg for arg in argv if not arg.startswith("-")]
    return names[len(words):]


def usage_error_line(text: str) -> str:
    """The message of a usage error box as tyro draws it (a title, the message wrapped over lines, a
    rule, help; with or without box lines and colours), joined into one line."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip(" │╭╮╰╯") for line in text.splitlines()]
    lines = [line for line in lines if line][1:]  # the title goes
    is_rule = [set(line) <= set("-─") for line in lines]
    start = is_rule.index(False) if False in is_rule else len(lines)
    end = is_rule.index(True, start) if True in is_rule[start:] else len(lines)
    return " ".join(lines[start:end]) or "cannot parse the arguments"


def did_you_mean(word: str, known) -> str:
    """"did you mean X? " for the known name nearest a mistyped one, or "" when none is near."""
    near = difflib.get_close_matches(word, list(known), n=1, cutoff=0.7)
    return f"did you mean {near[0]}? " if near else ""


def unknown_flag_error(unknown: list[str], args_type: type, prog: str) -> UserError:
    """One line naming the first option `args_type` does not have, with the nearest known one."""
    given = unknown[0].split("=", 1)[0]
    hint = did_you_mean(given, (flag(f.name) for f in dataclasses.fields(args_type)))
    what = "unknown option" if given.startswith("-") else "unexpected argument"
    return UserError(f"{prog}: {what} {given} ({hint}see {prog} --help)")


def version() -> str:
    try:
        return importlib.metadata.version("llamaforge")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def parse(args_type: type, argv: list[str], prog: str):
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 == len(argv):
            raise UserError("--config: expected a file name")
        argv = config_file_flags(Path(argv[at + 1]), args_type) + argv[:at] + argv[at + 2 :]
    default = preset_defaults(args_type, argv)
    asks_help = bool({"-h", "--help"} & set(argv))
    missing = [] if asks_help else missing_positionals(args_type, argv)
    missing += missing_flags(args_type, argv) if default is None and not asks_help else []
    if missing:
        raise UserError(f"{prog} needs {', '.join(missing)} (see {prog} --help)")
    about = (f"{(args_type.__doc__ or '').strip()}\n--config FILE: a YAML or JSON file of these options (keys as "
             "the flags' names); flags given here override it.")
    shown = io.StringIO()  # tyro's usage errors, shown as one line below
    try:
        with contextlib.redirect_stderr(shown):
            # DisallowNone: an option whose default is None reads `--watts FLOAT` in --help, not `{None}|FLOAT`
            args, unknown = tyro.cli(args_type, args=argv, prog=prog, description=about, default=default,
                                     config=(tyro.conf.DisallowNone,), return_unknown_args=True)
    except SystemExit as exit:
        if not exit.code:  # --help
            raise
        raise UserError(f"{prog}: {usage_error_line(shown.getvalue())} (see {prog} --help)") from None
    if unknown:
        raise unknown_flag_error(unknown, args_type, prog)
    check_bounds(args)
    return args


def summary(entry) -> str:
    """A command's one-line description: the first sentence of its arguments' docstring."""
    if isinstance(entry, dict):
        return "subcommands: " + ", ".join(entry)
    text = " ".join((entry[0].__doc__ or "").split())
    return text.split(". ")[0].rstrip(".") + "."


def usage(table: dict, prog: str) -> str:
    width = max(map(len, table)) + 2
    lines = [f"usage: {prog} <command> [--help]", "", "commands:"]
    for name, entry in table.items():
        lines += textwrap.wrap(summary(entry), 100, initial_indent=f"  {name:<{width}}",
                               subsequent_indent=" " * (width + 2), break_on_hyphens=False)
    return "\n".join(lines)


def run(argv: list[str], table: dict = COMMANDS, prog: str = "llamaforge"):
    if argv and argv[0] == "--version" and table is COMMANDS:
        print(f"llamaforge {version()}")
        return None
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(table, prog))
        return None
    if argv[0] not in table:
        print(usage(table, prog), file=sys.stderr)
        raise UserError(f"unknown command '{argv[0]}' ({did_you_mean(argv[0], table)}see {prog} --help)")
    entry = table[argv[0]]
    if isinstance(entry, dict):
        return run(argv[1:], entry, f"{prog} {argv[0]}")
    args_type, function = entry
    return function(parse(args_type, argv[1:], f"{prog} {argv[0]}"))


def main(argv: list[str] | None = None) -> int:
    try:
        run(sys.argv[1:] if argv is None else argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (`llamaforge sft --help | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not fail again
        return 128 + signal.SIGPIPE
    return 0


def entry() -> None:
    """The `llamaforge` executable and `python -m llamaforge`: exits with `main`'s status.

    A process that torchrun started ends with `os._exit` once its output is flushed, skipping the
    interpreter's shutdown: a gloo process group's threads can outlive it and abort the process
    ("terminate called without an active exception") after the run has saved everything, turning a
    finished run into a failed one. Every file is written and closed by then (checkpoints, metrics
    and records are each closed as they are written)."""
    code = main()
    if launched_world_size() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
