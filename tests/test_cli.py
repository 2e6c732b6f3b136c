"""The command line: --help everywhere, one-line errors naming the file, --config files, and
generate/chat end to end on a tiny checkpoint."""

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llamaforge.cli import main
from llamaforge.config import ModelConfig
from llamaforge.generate import generate
from llamaforge.model import Llama
from llamaforge.tokenizer import Tokenizer, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def llamaforge(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `python -m llamaforge ARGS` as a real process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "-m", "llamaforge", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def assert_one_line_error(stderr: str, *names: str) -> None:
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("error: "), stderr
    for name in names:
        assert name in stderr, (name, stderr)


# --- --help ----------------------------------------------------------------------------------------

HELP = {  # command -> flags its help must list
    "pipeline": ["--out", "--preset", "--seed"],
    "tokenizer train": ["--input", "--out", "--vocab-size"],
    "generate": ["--ckpt", "--prompt", "--chat", "--temperature", "--top-p", "--device"],
    "chat": ["--ckpt", "--system", "--max-new-tokens"],
    "convert": ["--from", "--tokenizer"],
    "world export": ["--out", "--seed"],
    "carbon": ["--model", "--tokens", "--accelerator", "--mfu"],
    "sft": ["--init", "--data", "--val-data", "--packing", "--last-turn-only", "--too-long", "--lora-rank"],
    "annotate": ["--policy", "--prompts", "--out", "--temperatures"],
    "reward": ["--kind", "--init", "--data", "--margin", "--batch-size"],
    "score": ["--rm", "--prompt", "--response"],
    "eval reward": ["--rm", "--data"],
    "rejection-sampling": ["--policy", "--rm-helpfulness", "--rm-safety", "--prompts", "--k", "--pool", "--out"],
    "pretrain": ["--preset", "--data", "--tokenizer", "--batch-tokens", "--max-steps", "--lr", "--parallel", "--nonfinite"],
    "ppo": ["--policy", "--rm-helpfulness", "--rm-safety", "--prompts", "--preset", "--max-steps", "--seed", "--kl-budget"],
    "gatt": ["--policy", "--prompts", "--instructions", "--dialogs", "--max-turns", "--out"],
    "distill": ["--policy", "--rm-safety", "--prompts", "--templates", "--targeted", "--out"],
    "report": ["RUN_DIR", "pipeline"],
}


def all_commands(table=None, prefix="") -> list[str]:
    from llamaforge.cli import COMMANDS

    table = COMMANDS if table is None else table
    names = []
    for name, entry in table.items():
        names += all_commands(entry, f"{prefix}{name} ") if isinstance(entry, dict) else [prefix + name]
    return names


def test_help_table_covers_every_command():
    assert sorted(HELP) == sorted(all_commands())


@pytest.fixture(scope="module")
def help_runs() -> dict[str, tuple[int, str, str]]:
    """`python -m llamaforge CMD --help` for every command, run side by side (each takes ~1.5 s)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    runs = {
        command: subprocess.Popen(
            [sys.executable, "-m", "llamaforge", *command.split(), "--help"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for command in HELP
    }
    outputs = {command: run.communicate(timeout=120) for command, run in runs.items()}
    return {command: (run.returncode, *outputs[command]) for command, run in runs.items()}


@pytest.mark.parametrize("command", HELP)
def test_every_command_answers_help(help_runs, command):
    returncode, stdout, stderr = help_runs[command]
    assert returncode == 0, stderr
    assert f"usage: llamaforge {command}" in stdout
    for flag in HELP[command]:
        assert flag in stdout, flag
    # an option that defaults to None or to an empty list reads as the user types it
    assert "{None}" not in stdout and "(default: )" not in stdout, stdout


def test_help_marks_the_paths_a_command_needs_as_required(help_runs):
    stdout = " ".join(help_runs["ppo"][1].split())
    assert "Safety reward model. (required)" in stdout
    assert "--val-prompts PATH [PATH ...]" in stdout


def test_top_level_and_group_help_list_the_commands(capsys):
    assert main(["--help"]) == 0
    stdout = capsys.readouterr().out
    for command in ("pipeline", "tokenizer", "generate", "chat", "convert", "world"):
        assert f"\n  {command} " in stdout, command
    assert main(["tokenizer", "--help"]) == 0
    assert "\n  train " in capsys.readouterr().out


def test_unknown_command_fails():
    result = llamaforge("frobnicate")
    assert result.returncode != 0
    assert "error: unknown command 'frobnicate'" in result.stderr and "Traceback" not in result.stderr


# --- bad input: one line on stderr, naming the file, exit 1 ----------------------------------------


def test_generate_with_missing_checkpoint():
    result = llamaforge("generate", "--ckpt", "/nonexistent", "--prompt", "hi")
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "/nonexistent")


def test_a_torchrun_process_exits_with_the_status_and_output_of_main():
    """Under torchrun (WORLD_SIZE > 1) the executable ends with os._exit (cli.entry): the status and
    the flushed error line must be those of an ordinary exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WORLD_SIZE": "2"}
    result = subprocess.run([sys.executable, "-m", "llamaforge", "generate", "--ckpt", "/nonexistent", "--prompt", "x"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "/nonexistent")


def test_a_closed_pipe_stops_the_output_quietly():
    """`llamaforge sft --help | head`: the reader leaves before the help is written."""
    proc = subprocess.Popen([sys.executable, "-m", "llamaforge", "sft", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # long before the imports are done and the help is printed
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and "Traceback" not in err, err


def test_tokenizer_train_with_missing_input(tmp_path):
    result = llamaforge("tokenizer", "train", "--input", "missing.txt", "--out", "d", cwd=tmp_path)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "missing.txt")
    assert not (tmp_path / "d" / "tokenizer.model").exists()


def test_malformed_jsonl_line_is_named_with_file_and_line(tmp_path):
    lines = [json.dumps({"text": f"document number {i}"}) for i in range(5)]
    lines[3] = '{"text": "unterminated'
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    result = llamaforge("tokenizer", "train", "--input", "data.jsonl", "--out", "d", "--vocab-size", "300", cwd=tmp_path)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "data.jsonl:4:")


# --- --config FILE ---------------------------------------------------------------------------------


def corpus(path: Path, lines: int = 400) -> Path:
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8))) for _ in range(200)]
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(5, 15))) for _ in range(lines)))
    return path


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_file_supplies_flags_and_command_line_overrides(tmp_path, suffix):
    text = corpus(tmp_path / "corpus.txt")
    values = {"input": [str(text)], "out": str(tmp_path / "from_file"), "vocab_size": 300}
    config = tmp_path / f"tok{suffix}"
    if suffix == ".yaml":
        config.write_text(f"input:\n  - {text}\nout: {tmp_path / 'from_file'}\nvocab_size: 300\n")
    else:
        config.write_text(json.dumps(values))

    assert main(["tokenizer", "train", "--config", str(config)]) == 0
    assert Tokenizer(tmp_path / "from_file").vocab_size == 300

    assert main(["tokenizer", "train", "--config", str(config), "--vocab-size", "320", "--out", str(tmp_path / "cli")]) == 0
    assert Tokenizer(tmp_path / "cli").vocab_size == 320


def test_config_file_with_unknown_key_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "tok.yaml"
    config.write_text("input: [a.txt]\nout: d\nvocab_sise: 300\n")
    assert main(["tokenizer", "train", "--config", str(config)]) == 1
    stderr = capsys.readouterr().err
    assert_one_line_error(stderr, str(config), "'vocab_sise'")


def test_config_file_missing_or_unparsable(tmp_path, capsys):
    assert main(["tokenizer", "train", "--config", str(tmp_path / "none.yaml")]) == 1
    assert_one_line_error(capsys.readouterr().err, str(tmp_path / "none.yaml"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"vocab_size": ')
    assert main(["tokenizer", "train", "--config", str(broken)]) == 1
    assert_one_line_error(capsys.readouterr().err, str(broken))


# --- generate and chat end to end ------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random 300-token model with a 300-token tokenizer. The output rows of <unk>, BOS, EOS and
    the 256 byte tokens are zero, so greedy decoding picks ordinary pieces and never stops early."""
    tmp = tmp_path_factory.mktemp("cli_ckpt")
    tokenizer = train_tokenizer([corpus(tmp / "corpus.txt").read_text()], 300, tmp / "tok")
    torch.manual_seed(0)
    model = Llama(ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, multiple_of=32, max_seq_len=128))
    with torch.no_grad():
        model.output.weight[: 3 + 256] = 0  # the largest of the 41 other logits is positive
    return model.save_pretrained(tmp / "ckpt", tokenizer_path=tokenizer)


def greedy_text(directory: Path, ids: list[int], max_new_tokens: int) -> str:
    model, tokenizer = Llama.from_pretrained(directory).eval(), Tokenizer(directory)
    new_ids, _ = generate(model, [ids], max_new_tokens, temperature=0.0, eos_id=tokenizer.eos_id)
    assert len(new_ids[0]) == max_new_tokens and all(i >= 259 for i in new_ids[0])
    return tokenizer.decode(new_ids[0])


@pytest.mark.parametrize("decode", ["auto", "static"])
def test_generate_prints_the_greedy_continuation(checkpoint, decode):
    result = llamaforge(
        "generate", "--ckpt", str(checkpoint), "--prompt", "hello world", "--max-new-tokens", "8",
        "--temperature", "0", "--device", "cpu", "--decode", decode,
    )
    assert result.returncode == 0, result.stderr
    ids = Tokenizer(checkpoint).encode("hello world", bos=True)
    continuation = greedy_text(checkpoint, ids, 8)
    assert len(continuation) >= 8
    assert result.stdout == "hello world" + continuation + "\n"


def test_generate_chat_answers_one_user_turn(checkpoint, capsys):
    argv = ["generate", "--ckpt", str(checkpoint), "--prompt", "hello", "--chat", "--max-new-tokens", "6",
            "--temperature", "0", "--device", "cpu"]
    assert main(argv) == 0
    ids = Tokenizer(checkpoint).encode_dialog_prompt([{"role": "user", "content": "hello"}])
    assert ids[:1] == [1] and len(ids) > 5
    assert capsys.readouterr().out == greedy_text(checkpoint, ids, 6) + "\n"


def test_chat_answers_then_exits(checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n/exit\n"))
    assert main(["chat", "--ckpt", str(checkpoint), "--max-new-tokens", "4", "--temperature", "0", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("assistant> ") == 1
    ids = Tokenizer(checkpoint).encode_dialog_prompt([{"role": "user", "content": "hello"}])
    assert "assistant> " + greedy_text(checkpoint, ids, 4) + "\n" in out


def test_generate_without_prompt_is_a_one_line_error(checkpoint, capsys):
    assert main(["generate", "--ckpt", str(checkpoint)]) == 1
    assert_one_line_error(capsys.readouterr().err, "--prompt")


# --- flags out of bounds, and inputs with nothing in them: one line before any work ---------------


@pytest.mark.parametrize("argv, flag", [
    (["sft", "--init", "x", "--data", "y", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["sft", "--init", "x", "--data", "y", "--seq-len", "0"], "--seq-len 0: must be at least 1"),
    (["pretrain", "--lr", "-1"], "--lr -1.0: must not be negative"),
    (["pretrain", "--max-steps", "-1"], "--max-steps -1: must not be negative"),
    (["ppo", "--policy", "x", "--max-steps", "-1"], "--max-steps -1: must not be negative"),
    (["rejection-sampling", "--policy", "x", "--max-new-tokens", "0"], "--max-new-tokens 0: must be at least 1"),
    (["rejection-sampling", "--policy", "x", "--top-p", "2"], "--top-p 2.0: must be in (0, 1]"),
    (["generate", "--ckpt", "x", "--prompt", "hi", "--temperature", "-1"], "--temperature -1.0: must not be negative"),
    (["reward", "--init", "x", "--data", "y", "--max-len", "0"], "--max-len 0: must be at least 1"),
    (["ppo", "--policy", "x", "--lam", "1.5"], "--lam 1.5: must be in [0, 1]"),
])
def test_a_flag_out_of_its_bounds_is_a_one_line_error(argv, flag, capsys):
    assert main(argv) == 1
    assert_one_line_error(capsys.readouterr().err, flag)


def test_out_naming_a_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "taken.jsonl").write_text("")
    assert main(["sft", "--init", "x", "--data", "y", "--out", str(tmp_path / "taken.jsonl")]) == 1
    assert_one_line_error(capsys.readouterr().err, "taken.jsonl: is a file; expected a directory")


def test_sft_with_zero_epochs_is_a_one_line_error(checkpoint, tmp_path, capsys):
    assert main(["sft", "--init", str(checkpoint), "--data", "y", "--epochs", "0", "--out", str(tmp_path / "o")]) == 1
    assert_one_line_error(capsys.readouterr().err, "--epochs 0: must be at least 1")


def test_sft_on_an_empty_file_says_so(checkpoint, tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["sft", "--init", str(checkpoint), "--data", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "o"),
                 "--seq-len", "64", "--device", "cpu"]) == 1
    assert_one_line_error(capsys.readouterr().err, "empty.jsonl: no dialog to train on (the file is empty)")


def test_chat_with_no_room_for_the_dialog_is_a_one_line_error(checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    assert main(["chat", "--ckpt", str(checkpoint), "--max-new-tokens", "1000", "--device", "cpu"]) == 1
    assert_one_line_error(capsys.readouterr().err, "--max-new-tokens 1000", "128-token context")


@pytest.mark.parametrize("command", ["rejection-sampling", "ppo", "distill"])
def test_an_empty_prompt_file_is_refused_before_any_work(command, checkpoint, tmp_path, capsys):
    from llamaforge.checkpoint import REWARD_HEAD_FILE

    rm = tmp_path / "rm"  # passes the checkpoint checks; loading it is never reached
    rm.mkdir()
    (rm / "tokenizer.model").write_bytes((checkpoint / "tokenizer.model").read_bytes())
    (rm / REWARD_HEAD_FILE).write_bytes(b"")
    (tmp_path / "empty.jsonl").write_text("\n")
    rms = ["--rm-safety", str(rm)] + ([] if command == "distill" else ["--rm-helpfulness", str(rm)])
    argv = [command, "--policy", str(checkpoint), *rms, "--prompts", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    assert_one_line_error(capsys.readouterr().err, "empty.jsonl: no prompt (empty files)")


def test_a_chat_checkpoint_given_as_a_reward_model_is_named(checkpoint, tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    argv = ["ppo", "--policy", str(checkpoint), "--rm-helpfulness", str(checkpoint), "--rm-safety", str(checkpoint),
            "--prompts", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    assert_one_line_error(capsys.readouterr().err, f"{checkpoint}: not a reward model")
    assert main(["score", "--rm", str(checkpoint), "--prompt", "hi", "--response", "yes", "--device", "cpu"]) == 1
    assert_one_line_error(capsys.readouterr().err, f"{checkpoint}: not a reward model")  # the loader's own check


@pytest.mark.parametrize("command, flags", [
    ("rejection-sampling", ["--rm-helpfulness", "a", "--rm-safety", "b", "--prompts", "p.jsonl"]),
    ("ppo", ["--rm-helpfulness", "a", "--rm-safety", "b", "--prompts", "p.jsonl"]),
    ("distill", ["--rm-safety", "b", "--prompts", "p.jsonl"]),
    ("gatt", ["--prompts", "p.jsonl", "--instructions", "i.jsonl"]),
])
def test_a_missing_policy_is_named_alike_by_every_command(command, flags, tmp_path, capsys):
    assert main([command, "--policy", str(tmp_path / "nope"), *flags]) == 1
    assert_one_line_error(capsys.readouterr().err, f"{tmp_path / 'nope'}: no such checkpoint directory")


@pytest.mark.parametrize("argv, message", [
    (["score", "--rm", "x", "--prompt=hi"], "llamaforge score needs --response (see llamaforge score --help)"),
    (["annotate"], "llamaforge annotate needs --policy, --prompts, --out"),
    (["world", "export"], "llamaforge world export needs --out"),
])
def test_missing_required_options_are_named_in_one_line(argv, message, capsys):
    assert main(argv) == 1
    assert_one_line_error(capsys.readouterr().err, message)


@pytest.mark.parametrize("argv, message", [
    (["report"], "llamaforge report needs RUN_DIR (see llamaforge report --help)"),
    (["convert", "meta_dir"], "llamaforge convert needs DST"),
    (["report", "a", "b"], "llamaforge report: unexpected argument b"),
    (["sft", "--epoch", "2"], "llamaforge sft: unknown option --epoch (did you mean --epochs? see llamaforge sft --help)"),
    (["ppo", "--bogus=1"], "llamaforge ppo: unknown option --bogus (see llamaforge ppo --help)"),
    (["sft", "--epochs", "abc"], "Error parsing --epochs: invalid literal for int() with base 10: 'abc'"),
    (["ppo", "--reward", "both"], "invalid choice 'both' for argument '--reward'. Expected one of ('piecewise', "
                                  "'helpfulness', 'safety')."),
    (["sft", "--init"], "Missing value for argument '--init'"),
])
def test_a_malformed_command_line_is_one_line(argv, message, capsys):
    """What tyro would draw as a box (exit 2) is one line naming the argument, exit 1, like every
    other bad input."""
    assert main(argv) == 1
    assert_one_line_error(capsys.readouterr().err, message)


def test_usage_error_line_reads_tyro_boxes_drawn_plain_or_in_colour():
    from llamaforge.cli import usage_error_line

    plain = (" Invalid choice   \n --------------- \n  invalid choice 'x' for argument '--nonfinite'. Expected one of ('skip',\n"
             "  'stop').  \n  ---------------\n  For full helptext, run llamaforge sft --help\n")
    boxed = ("\x1b[31m╭─\x1b[0m Invalid choice ──────╮\n│ \x1b[91;1minvalid choice 'x'\x1b[0m for argument '--nonfinite'. "
             "Expected one of ('skip', │\n│ 'stop'). │\n│ ─────────── │\n│ For full helptext, run llamaforge sft --help │\n"
             "╰──────────╯\n")
    expected = "invalid choice 'x' for argument '--nonfinite'. Expected one of ('skip', 'stop')."
    assert usage_error_line(plain) == expected
    assert usage_error_line(boxed) == expected
    assert usage_error_line("") == "cannot parse the arguments"


def test_version_and_a_mistyped_command(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"llamaforge {version('llamaforge')}\n"
    assert main(["rejection_sampling"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: unknown command 'rejection_sampling' (did you mean rejection-sampling? see llamaforge --help)")


def test_the_command_list_gives_one_sentence_per_command_in_aligned_columns(capsys):
    assert main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    starts = [line.index("Sample K answers") for line in lines if line.startswith("  rejection-sampling")]
    assert starts and all(line.index("Train a helpfulness") == starts[0] for line in lines if line.startswith("  reward "))
    assert not any("seq_len" in line for line in lines)  # gatt's docstring goes on; its summary does not
