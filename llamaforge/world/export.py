"""`llamaforge world export`: write the world as data files in the documented formats
(README, "Data formats"), so a user sees exactly which files to replace with their own data.

Output is byte-identical for a seed: records are written with sorted keys, in a seeded order, and
nothing depends on time, the machine or the process.
"""

import json
import pathlib
import random
from dataclasses import dataclass

from llamaforge.data.jsonl import write_jsonl
from llamaforge.errors import UserError
from llamaforge.world import annotators
from llamaforge.world.demos import DemoMix
from llamaforge.world.prompts import CATEGORIES, SPLITS
from llamaforge.world.world import World

CHAT_TAGS = ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")


@dataclass
class ExportArgs:
    """Write the built-in world as data files: pretraining corpus, SFT demonstrations, prompt sets,
    GAtt instructions, weekly batches and a sample of annotated preference pairs, plus a README."""

    out: pathlib.Path
    """directory to write the files into (created if missing; existing files are overwritten)"""
    seed: int = 0
    """world seed: the same seed gives byte-identical files, another seed another world"""
    corpus_mb: float = 4.0
    """size of the pretraining corpus in megabytes"""
    sft_dialogs: int = 3000
    """number of SFT training dialogs (sft_test.jsonl gets a tenth, clean)"""
    preference_pairs: int = 1000
    """annotated pairs per guideline (helpfulness, safety) in preferences_sample.jsonl"""
    batches: int = 2
    """number of weekly prompt batches to write as prompts_batch_KK.jsonl"""


def _check_tags(record, where: str) -> None:
    """Refuse to write content the chat format would reject (Meta's chat_completion)."""
    text = json.dumps(record, ensure_ascii=False)
    for tag in CHAT_TAGS:
        if tag in text:
            raise AssertionError(f"{where}: record contains the chat tag {tag!r}")


def checked_jsonl(path: pathlib.Path, records: list[dict]) -> int:
    """Writes `records` after checking that none holds a chat tag; returns how many."""
    for i, record in enumerate(records):
        _check_tags(record, f"{path.name}:{i + 1}")
    write_jsonl(path, records)
    return len(records)


def main(args: ExportArgs) -> pathlib.Path:
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if args.corpus_mb <= 0 or args.sft_dialogs < 10 or args.preference_pairs < 1 or args.batches < 0:
        raise UserError("--corpus-mb must be > 0, --sft-dialogs >= 10, --preference-pairs >= 1, "
                        "--batches >= 0")
    out.mkdir(parents=True, exist_ok=True)
    world = World(args.seed)
    counts: dict[str, int] = {}

    def put(name: str, records: list[dict]) -> None:
        counts[name] = checked_jsonl(out / name, records)

    put("corpus.jsonl", [{"text": d} for d in world.corpus_documents(int(args.corpus_mb * 1e6))])
    mix = DemoMix(n_dialogs=args.sft_dialogs)
    put("sft_train.jsonl", world.sft_dialogs("train", mix))
    put("sft_test.jsonl", world.sft_dialogs("test", mix))
    for category in CATEGORIES:
        for split in SPLITS:
            put(f"prompts_{category}_{split}.jsonl", world.prompts(category, split))
    put("gatt_instructions.jsonl", [dict(i.to_record(), split=split) for split in SPLITS
                                    for i in world.gatt_instructions(split)])
    for k in range(args.batches):
        put(f"prompts_batch_{k:02d}.jsonl", world.batch(k))

    rng = random.Random(f"{args.seed}:export-preferences")
    stats = {"seed": args.seed, "annotator_agreement": {}, "safety_meta": {}}
    preferences = []
    for guideline in annotators.GUIDELINES:
        records = world.preference_pairs(args.preference_pairs, guideline, rng)
        preferences += records
        table = annotators.agreement_by_rating(world, records, guideline)
        stats["annotator_agreement"][guideline] = {
            r: {"n": row["n"], "accuracy": round(row["accuracy"], 4)} for r, row in table.items()}
    stats["safety_meta"] = {m: round(s, 4)
                            for m, s in annotators.safety_meta_shares(preferences).items()}
    put("preferences_sample.jsonl", preferences)
    stats["records"] = counts
    (out / "world_stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n",
                                          encoding="utf-8")
    (out / "README.md").write_text(readme(args, counts), encoding="utf-8")
    print(f"wrote {len(counts) + 2} files ({sum(counts.values()):,} records) to {out}; {out / 'README.md'} describes them")
    return out


def readme(args: ExportArgs, counts: dict[str, int]) -> str:
    n = counts.get
    batch_lines = "".join(f"| `prompts_batch_{k:02d}.jsonl` | {n(f'prompts_batch_{k:02d}.jsonl')} "
                          f"| weekly batch {k}: fresh training prompts (70% helpful, 20% "
                          f"adversarial, 10% borderline) with `\"batch\": {k}` |\n"
                          for k in range(args.batches))
    prompt_lines = "".join(f"| `prompts_{c}_{s}.jsonl` | {n(f'prompts_{c}_{s}.jsonl')} | {c} "
                           f"prompts, {s} split |\n" for c in CATEGORIES for s in SPLITS)
    return f"""# llamaforge built-in world, seed {args.seed}

Synthetic data for the whole Llama 2 recipe, written by `llamaforge world export --seed {args.seed}`.
Every file uses the formats any llamaforge stage reads (README, "Data formats"), so each can be replaced by real
data of the same shape. The gold answers behind the prompts are not in these files: the world's
judges (`llamaforge.world.World.helpfulness` / `.safety`) look them up from the prompt text.
See docs/world.md for how the world is built.

| file | records | what it is |
|---|---|---|
| `corpus.jsonl` | {n('corpus.jsonl')} | pretraining documents, one `{{"text": ...}}` per line: encyclopedic entries, stories, dialogues, worked examples, and a few hazardous procedures (so a pretrained model can leak them) |
| `sft_train.jsonl` | {n('sft_train.jsonl')} | SFT demonstrations `{{"messages": [{{"role", "content"}}, ...]}}`, single- and multi-turn, with a deliberate quality mix: some answers wrong, incomplete or verbose, some adversarial prompts answered unsafely |
| `sft_test.jsonl` | {n('sft_test.jsonl')} | clean demonstrations on test prompts (validation loss) |
{prompt_lines}| `gatt_instructions.jsonl` | {n('gatt_instructions.jsonl')} | Ghost Attention instructions `{{"text", "short", "constraints", "split"}}`: the full and the shortened form of one or two checkable constraints |
{batch_lines}| `preferences_sample.jsonl` | {n('preferences_sample.jsonl')} | pairs annotated by the simulated annotators: `{{"prompt": messages, "chosen", "rejected", "rating", "is_safety"}}`, plus `"safety_meta"` on safety pairs |
| `world_stats.json` | - | record counts, the annotators' per-rating agreement with the gold judges, safety-metadata shares |

Prompt records are `{{"id", "messages", "category", "kind", "turns"}}`, adversarial ones also
`"risk_category"` (the hazard's kind: poisoning, forgery, ...); `messages` ends on a user
turn, and multi-turn prompts carry earlier assistant turns. Train and test splits never share a
fact, a skill instance, a hazard framing or a borderline request. `rating` is one of
significantly_better, better, slightly_better, negligibly_better; `safety_meta` is one of
chosen_safe_rejected_unsafe, both_safe, both_unsafe (pairs whose chosen answer is unsafe and
rejected answer safe are dropped, as in the paper).
"""
