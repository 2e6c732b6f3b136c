"""`llamaforge gatt`: Ghost Attention (paper §3.3), an instruction that holds for a whole dialog.

plan (synthetic dialogs: an instruction, drawn from the training instructions and shortened half
the time, and a few user messages) -> sample (the latest RLHF model answers turn by turn with the
instruction appended to every user message, so it follows it on every turn) -> rewrite (the
instruction kept once, as the system message, and removed from the user messages) -> fine-tune
(the SFT stage with the loss on the last assistant turn only: earlier turns, answers included,
are context and carry no loss).

The paper: "we can then sample from this synthetic data using the current RLHF model ... [and]
fine-tune a model on it ... we simply set the loss to 0 for all the tokens from the previous turns,
including assistant messages". Here every sampled dialog of n turns also contributes its
truncations after turns 1 .. n-1 (--every-depth), so each sampled answer is trained once, at the
depth it was sampled at, and every depth up to --max-turns is trained, not only the last one. The
model's own answers to plain prompts of every category (--plain-dialogs) join the data, so that it
still answers plainly when no instruction is given and answers safety prompts as before. Nothing
here judges whether an answer follows the instruction: the data is what the model sampled.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from llamaforge.checkpoint import check_checkpoints, load_for_sampling, load_for_scoring
from llamaforge.data.jsonl import jsonl_records, write_jsonl
from llamaforge.data.prompts import CATEGORIES, read_prompts
from llamaforge.device import DeviceName, resolve_device
from llamaforge.errors import UserError
from llamaforge.eval.reward import response_scores
from llamaforge.flags import OptionalPath, RequiredPath, RequiredPaths
from llamaforge.generate import generate
from llamaforge.model import Llama, RewardModel
from llamaforge.tokenizer import Tokenizer
from llamaforge.train import sft


@dataclass
class GattArgs(sft.FinetuneOptions):
    """Ghost Attention: sample multi-turn dialogs with an instruction in every user message, then
    fine-tune with the instruction once, as the system message, and the loss on the last turn only.
    The SFT preset's seq_len also bounds the dialogs."""

    policy: RequiredPath = None
    """The latest RLHF chat checkpoint: it samples the dialogs and is fine-tuned."""
    prompts: RequiredPaths = field(default_factory=list)
    """Prompt files: the last user messages of their helpful prompts become the instructed dialogs'
    user turns; those of every prompt (borderline and adversarial too) can be plain dialogs."""
    instructions: RequiredPath = None
    """Instruction file, {"text", "short", "split"} per line (the world's gatt_instructions.jsonl);
    records with "split": "train" (or no split) are used."""
    out: Path = Path("runs/gatt")
    """Run directory: dialogs.jsonl, gatt_train.jsonl, gatt.json, sft/ (sft/model: the result)."""
    preset: str = "demo"
    """Defaults for every option: demo, smoke, llama2_7b (flags override them)."""
    dialogs: int = 128
    """Synthetic dialogs to sample."""
    max_turns: int = 8
    """Most user turns per dialog (each dialog draws 2 .. max_turns; fewer when the context is full)."""
    max_new_tokens: int = 40
    """Most tokens per sampled answer."""
    temperature: float = 0.6
    """Sampling temperature. Meta's chat default: the data should be the model's good answers,
    still varied across dialogs that share a user message."""
    top_p: float = 0.9
    """Nucleus sampling mass (Meta's chat default)."""
    batch_dialogs: int = 64
    """Dialogs answered together at each turn."""
    every_depth: bool = True
    """Also train on each dialog cut after every earlier turn (each answer trained at its depth)."""
    plain_dialogs: int = 256
    """Single-turn prompts without an instruction, answered by the policy itself and trained on too,
    so that the model still answers plainly when no instruction is given, and answers safety prompts
    as it did."""
    candidates: int = 1
    """Answers sampled per turn of an instructed dialog; with more than one, --rm-helpfulness keeps
    the one it scores highest on the dialog without the instruction (rejection sampling, paper
    §3.2.3, applied to GAtt's data), and the dialog goes on from it."""
    kinds: list[str] = field(default_factory=list)
    """Constraint kinds to train on: an instruction is kept when each of its constraints is of one of
    them (read from the file's "constraints"); empty: every instruction. The paper's GAtt drew its
    constraints from what the RLHF model does when asked (hobbies, language, public figures, §3.3);
    an instruction the model never follows, even in the user message, gives dialogs in which it
    ignores the system message, and trains that."""
    rm_helpfulness: OptionalPath = None
    """Helpfulness reward model that picks among --candidates (required when it is above 1)."""
    seed: int = 0
    """Seed of the dialog plans, the sampling and the fine-tuning."""
    device: DeviceName = "auto"
    """cpu, cuda, or auto."""

    PRESETS: ClassVar[dict] = {}


def demo() -> GattArgs:
    """The laptop pipeline's GAtt: about 30 s sampling and 60 s fine-tuning on 2 CPU cores.
    One epoch at 3e-4, not SFT's 1e-3: at 1e-3 the 6M model lost a quarter of its gold helpfulness
    on plain prompts, and a second epoch added no recall. 2,048 plain answers (the world has 1,855
    distinct training prompts, so all of them): the 6M model answers far worse with an instruction
    than without (gold 0.25 against 0.76 on the same questions), and with 256 plain answers GAtt
    cost 0.13 of held-out gold helpfulness, with all helpful ones 0.03-0.04, for 30 s; without the
    borderline and adversarial ones it refused 30-37% of borderline prompts (docs/results.md).
    Characters and word limits only: the 6M model never writes a prefix, an end word or capitals
    even when the instruction is in the user message, and those dialogs taught it to ignore the
    system message. On three seeds a character then held at 92.5-100% through turn 8 (the paper's
    Table 30 attributes, no one else named), against 70-87.5% at turn 8 with every kind."""
    return GattArgs(preset="demo", dialogs=128, max_turns=8, max_new_tokens=40, plain_dialogs=2048, sft_preset="demo",
                    epochs=1, lr=3e-4, kinds=["character", "max_words"])


def smoke() -> GattArgs:
    return GattArgs(preset="smoke", dialogs=6, max_turns=3, max_new_tokens=12, plain_dialogs=4, batch_dialogs=4,
                    sft_preset="smoke", max_steps=2)


def llama2_7b() -> GattArgs:
    """The paper gives no GAtt data size; it measures recall up to turn 20 (paper §3.3), which
    Llama 2's 4,096-token context holds."""
    return GattArgs(preset="llama2_7b", dialogs=2000, max_turns=20, max_new_tokens=256, plain_dialogs=2000,
                    batch_dialogs=16, sft_preset="llama2_7b_sft", epochs=1)


GattArgs.PRESETS.update(demo=demo, smoke=smoke, llama2_7b=llama2_7b)


@dataclass(frozen=True)
class DialogPlan:
    """One synthetic dialog before sampling: the instruction as written to the model (full or short
    form) and the user messages, without the instruction."""

    instruction: str
    users: tuple[str, ...]


def read_instructions(path: Path, split: str, kinds: tuple[str, ...] = ()) -> list[dict]:
    """The instruction records of one split ({"text", "short"} each; no "split" field counts as train),
    and with `kinds` only those whose every constraint ({"constraints": [{"kind", ...}]}) is of
    one of them."""
    records = []
    for where, record in jsonl_records(path):
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected an object with 'text' and 'short'")
        for key in ("text", "short"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise UserError(f"{where}: field '{key}': expected a non-empty string")
        if record.get("split", "train") != split:
            continue
        if kinds:
            constraints = record.get("constraints")
            if not isinstance(constraints, list) or not constraints or not all(
                    isinstance(c, dict) and isinstance(c.get("kind"), str) for c in constraints):
                raise UserError(f"{where}: field 'constraints': expected a list of objects with a 'kind' (--kinds reads it)")
            if not all(c["kind"] in kinds for c in constraints):
                continue
        records.append(record)
    if not records:
        of_kinds = f" of kinds {', '.join(kinds)}" if kinds else ""
        raise UserError(f"{path}: no instruction of split '{split}'{of_kinds}")
    return records


def user_messages(prompt_records: list[dict], categories: tuple[str, ...] = ("helpful",)) -> list[str]:
    """The distinct last user messages of the prompts of `categories`, in file order."""
    texts = [r["messages"][-1]["content"] for r in prompt_records if r["category"] in categories]
    return list(dict.fromkeys(texts))


def plan_dialogs(instructions: list[dict], users: list[str], n: int, min_turns: int, max_turns: int,
                 seed: int, purpose: str = "gatt") -> list[DialogPlan]:
    """`n` dialogs, each an instruction (its short form half the time, paper §3.3) and
    min_turns .. max_turns distinct user messages. Dialog i depends on (seed, purpose, i) only."""
    plans = []
    for i in range(n):
        rng = random.Random(f"{seed}:{purpose}:{i}")
        record = rng.choice(instructions)
        turns = rng.randint(min(min_turns, max_turns), max_turns)
        chosen = rng.sample(users, turns) if len(users) >= turns else rng.choices(users, k=turns)
        plans.append(DialogPlan(record["short"] if rng.random() < 0.5 else record["text"], tuple(chosen)))
    return plans


def with_instruction(user: str, instruction: str) -> str:
    """A user message with the instruction appended, as GAtt samples it (paper §3.3)."""
    return f"{user} {instruction}"


def training_dialog(sampled: list[dict], instruction: str) -> list[dict]:
    """The GAtt training form of a sampled dialog: the instruction once, as the system message, and
    every user message without it; assistant answers as sampled. With the loss on the last
    assistant turn only (encode_example(..., last_turn_only=True)) this is paper §3.3's data."""
    suffix = " " + instruction
    messages = [{"role": "system", "content": instruction}]
    for i, message in enumerate(sampled):
        content = message["content"]
        if message["role"] == "user":
            if not content.endswith(suffix):
                raise ValueError(f"message {i}: the user message does not end with the instruction {instruction!r}")
            content = content[: -len(suffix)]
        messages.append({"role": message["role"], "content": content})
    return messages


# (dialog indices, each dialog up to its latest user message, each one's candidate answers) -> picks
Chooser = Callable[[list[int], list[list[dict]], list[list[str]]], list[int]]


def converse(
    model: Llama, tokenizer: Tokenizer, starts: list[list[dict]], users: list[list[str]], max_new_tokens: int,
    temperature: float, top_p: float, seed: int, batch_size: int, context: int, candidates: int = 1,
    choose: Chooser | None = None,
) -> tuple[list[list[dict]], list[int | None]]:
    """Dialogs the model answers turn by turn: dialog i opens with `starts[i]` (e.g. a system
    message) and gets the user messages `users[i]` one at a time, all dialogs batched per turn.
    A dialog ends early when its next prompt plus an answer would not fit in `context` tokens, or
    when the model answers with nothing (the chat format has no empty turn): the second list gives
    that turn (1-based) per dialog, None if none. The answer to turn t of dialog i is drawn with
    seed `seed + i * 1000 + t`, whatever the batching. With `candidates` K > 1, K answers are drawn
    per turn (candidate k with seed `(seed + i * 1000 + t) * K + k`) and `choose` (a Chooser) says
    which one each dialog keeps."""
    dialogs = [list(s) for s in starts]
    empty_at: list[int | None] = [None] * len(dialogs)
    going = list(range(len(dialogs)))
    model.eval()
    for turn in range(max((len(u) for u in users), default=0)):
        asks = []  # (dialog, prompt ids)
        for i in going:
            if turn < len(users[i]):
                ids = tokenizer.encode_dialog_prompt(dialogs[i] + [{"role": "user", "content": users[i][turn]}])
                if len(ids) + max_new_tokens <= context:
                    asks.append((i, ids))
        asks.sort(key=lambda ask: len(ask[1]))  # similar lengths share a batch: less padding
        going = []
        for start in range(0, len(asks), batch_size):
            chunk = asks[start : start + batch_size]
            seeds = [(seed + i * 1000 + turn) * candidates + k for i, _ in chunk for k in range(candidates)]
            tokens, _ = generate(model, [ids for _, ids in chunk], max_new_tokens, temperature, top_p,
                                 eos_id=tokenizer.eos_id, seeds=seeds, samples_per_prompt=candidates)
            texts = [tokenizer.decode([t for t in new if t != tokenizer.eos_id]).strip() for new in tokens]
            answers = [texts[j : j + candidates] for j in range(0, len(texts), candidates)]
            picks = [0] * len(chunk)
            if candidates > 1 and choose is not None:
                picks = choose([i for i, _ in chunk],
                               [dialogs[i] + [{"role": "user", "content": users[i][turn]}] for i, _ in chunk], answers)
            for (i, _), options, pick in zip(chunk, answers, picks):
                text = options[pick]
                if text:
                    dialogs[i] += [{"role": "user", "content": users[i][turn]}, {"role": "assistant", "content": text}]
                    going.append(i)
                else:
                    empty_at[i] = turn + 1
        going.sort()
    return dialogs, empty_at


def reward_model_chooser(rm: RewardModel, tokenizer: Tokenizer, instructions: list[str]) -> Chooser:
    """A Chooser keeping the answer the reward model scores highest on its dialog as it reads
    without the instruction (dialog i's is instructions[i]): the answer that best answers the
    question, among those sampled to follow the instruction. An empty answer scores -inf."""

    def choose(indices: list[int], contexts: list[list[dict]], answers: list[list[str]]) -> list[int]:
        prompts, flat = [], []
        for i, context, options in zip(indices, contexts, answers):
            plain = training_dialog(context, instructions[i])[1:]  # the system message dropped too
            prompts += [plain] * len(options)
            flat += options
        return response_scores(rm, tokenizer, prompts, flat).view(len(answers), -1).argmax(dim=1).tolist()

    return choose


def training_examples(sampled: list[dict], instruction: str, every_depth: bool) -> list[list[dict]]:
    """The training dialogs of one sampled dialog: the whole of it, and with every_depth its cuts
    after each earlier turn too (shortest first)."""
    turns = len(sampled) // 2
    depths = range(1, turns + 1) if every_depth else [turns]
    return [training_dialog(sampled[: 2 * k], instruction) for k in depths]


def main(args: GattArgs) -> Path:
    if args.policy is None or args.instructions is None or not args.prompts:
        raise UserError("gatt needs --policy, --instructions and --prompts FILES")
    if args.dialogs < 1 or args.max_turns < 1 or args.max_new_tokens < 1:
        raise UserError("--dialogs, --max-turns and --max-new-tokens must be at least 1")
    if args.plain_dialogs < 0:
        raise UserError(f"--plain-dialogs {args.plain_dialogs}: must be 0 or more")
    if args.candidates < 1:
        raise UserError(f"--candidates {args.candidates}: must be at least 1")
    if args.candidates > 1 and args.rm_helpfulness is None:
        raise UserError(f"--candidates {args.candidates} needs --rm-helpfulness to choose among them")
    check_checkpoints(args.policy, [args.rm_helpfulness] if args.rm_helpfulness else [])
    if args.sft_preset not in sft.SftArgs.PRESETS:
        raise UserError(f"--sft-preset {args.sft_preset!r}: unknown (known: {', '.join(sft.SftArgs.PRESETS)})")
    instructions = read_instructions(args.instructions, "train", tuple(args.kinds))
    records = read_prompts(args.prompts)
    users = user_messages(records)
    if not users:
        raise UserError(f"{args.prompts[0]}: no helpful prompt (GAtt's user turns are helpful prompts)")
    finetune = sft.finetune_args(args, init=args.policy, out=args.out / "sft",
                                   data=[args.out / "gatt_train.jsonl"], last_turn_only=True, too_long="drop",
                                   seed=args.seed, device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    model, tokenizer = load_for_sampling(args.policy, resolve_device(args.device))
    # The training form must fit the fine-tuning rows whole: a cut would drop the system message.
    context = min(model.config.max_seq_len, finetune.seq_len)
    plans = plan_dialogs(instructions, users, args.dialogs, 2, args.max_turns, args.seed)
    choose = None
    if args.candidates > 1:
        rm, _ = load_for_scoring(args.rm_helpfulness, resolve_device(args.device))
        choose = reward_model_chooser(rm, tokenizer, [p.instruction for p in plans])
    sampled, _ = converse(model, tokenizer, [[] for _ in plans],
                          [[with_instruction(u, p.instruction) for u in p.users] for p in plans],
                          args.max_new_tokens, args.temperature, args.top_p, args.seed * 1_000_003, args.batch_dialogs,
                          context, args.candidates, choose)
    # GAtt's dialogs all carry an instruction; trained on them alone, the demo model put a character's
    # introduction on any name in a question and its gold helpfulness fell from 0.35 to 0.17. The
    # paper does not say what GAtt's data was mixed with; here, the model's own plain answers.
    # GAtt's fine-tuning on helpful dialogs alone moved borderline prompts toward refusals (run i1:
    # false refusals 12% -> 37%); the model's own answers to safety prompts keep them where they were.
    plain_pool = user_messages(records, CATEGORIES)
    plain_users = random.Random(f"{args.seed}:gatt-plain").sample(plain_pool, min(args.plain_dialogs, len(plain_pool)))
    plain_seed = args.seed * 1_000_003 + 500_000  # past the dialogs' seeds (seed + i * 1000 + turn)
    plain, _ = converse(model, tokenizer, [[] for _ in plain_users], [[u] for u in plain_users], args.max_new_tokens,
                        args.temperature, args.top_p, plain_seed, args.batch_dialogs, context)
    del model
    sampling_s = time.perf_counter() - started
    kept = [(p, d) for p, d in zip(plans, sampled) if d]  # an empty first answer leaves no dialog
    if not kept:
        raise UserError(f"{args.policy}: every sampled first answer was empty; nothing to train on")

    examples, too_long = [], 0
    for plan, dialog in kept:
        for example in training_examples(dialog, plan.instruction, args.every_depth):
            ids, _ = tokenizer.encode_dialog(example)
            if len(ids) <= context:
                examples.append({"messages": example})
            else:  # the system block's tags can push a dialog that just fit past the context
                too_long += 1
    examples += [{"messages": d} for d in plain if d]
    write_jsonl(args.out / "dialogs.jsonl", [{"instruction": p.instruction, "messages": d} for p, d in kept])
    write_jsonl(args.out / "gatt_train.jsonl", examples)
    turns = [len(d) // 2 for _, d in kept]
    report = {
        "dialogs": len(kept), "empty_first_answers": len(plans) - len(kept), "training_dialogs": len(examples),
        "plain_dialogs": sum(bool(d) for d in plain),
        "dropped_too_long": too_long, "turns_planned": sum(len(p.users) for p in plans), "turns_sampled": sum(turns),
        "turns_per_dialog": {str(t): turns.count(t) for t in sorted(set(turns))},
        "sampling_s": sampling_s,
    }
    print(f"GAtt: sampled {report['turns_sampled']} turns in {len(kept)} dialogs and {report['plain_dialogs']} plain "
          f"answers ({sampling_s:.1f}s); training on {len(examples)} dialogs, loss on the last turn only")
    started = time.perf_counter()
    sft.main(finetune)
    report["finetune_s"] = time.perf_counter() - started
    report["sft"] = json.loads((finetune.out / "summary.json").read_text())
    (args.out / "gatt.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"fine-tuned model: {finetune.out / 'model'}")
    return args.out
