"""What rejection sampling's fine-tuning does to gold, by how its answers are selected (RLHF-V1 of a
pipeline run: its SFT model, the reward stage's reward models, the first version's weekly batch).

Each SPEC is `select:temperature:greedy:epochs:replay:lr`:
- select: `rm` (the highest Rc, eq. 3, what the pipeline does), `gold` (an oracle: the highest gold
  utility of each prompt's guideline; a diagnostic, never a training signal of the recipe) or
  `greedy` (the policy's own greedy answer: a control),
- temperature of the K = 8 samples, greedy: 1 to add the policy's greedy answer as a candidate,
- epochs of the SFT-preset fine-tuning, replay: how many of the world's SFT demonstrations join the
  selected answers, lr: the fine-tuning's peak learning rate (0: the SFT preset's).
Prints the selected answers' mean gold helpfulness on helpful prompts and the fine-tuned model's
held-out gold metrics, with the order-swapped win rate against the SFT model.

    python experiments/rs_selection.py RUN_DIR OUT_DIR PROMPTS rm:1.0:0:2:0:0 gold:1.0:0:2:0:1e-4 ...
"""

import json
import random
import sys
from pathlib import Path

from llamaforge.checkpoint import TOKENIZER_FILE, load_model_and_tokenizer, load_reward_model
from llamaforge.data.jsonl import write_jsonl
from llamaforge.eval.chat import answer
from llamaforge.pipeline.evaluation import EvalPlan, gold_judges, gold_metrics, held_out_prompts, model_answers, read_jsonl
from llamaforge.pipeline.records import read_record
from llamaforge.rlhf.rejection_sampling import sample_answers, score, select_best
from llamaforge.tokenizer import Tokenizer
from llamaforge.train import sft
from llamaforge.world import World

run, out, n_prompts = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
world, k = World(0), 8
policy = run / read_record(run / "sft")["outputs"]["model"]
reward_record = read_record(run / "reward")["outputs"]
rm_dirs = {kind: run / reward_record[f"rm_{kind}"] for kind in ("helpfulness", "safety")}
records = world.batch(3, 400)[:n_prompts]
prompts = [r["messages"] for r in records]
reference = json.loads((run / read_record(run / "sft")["outputs"]["answers"]).read_text())["answers"]
prompt_sets = held_out_prompts(run / "world", None)
plan = EvalPlan(prompts=None, samples=2)
judges = gold_judges(world)

model, tokenizer = load_model_and_tokenizer(policy)
greedy = answer(model, tokenizer, prompts, 64, 0.0)
helpful_greedy = [(r, g) for r, g in zip(records, greedy) if r["category"] == "helpful"]
greedy_gold = sum(world.helpfulness(r["messages"], g) for r, g in helpful_greedy) / len(helpful_greedy)
demos = read_jsonl(run / "world" / "sft_train.jsonl")
samples_at: dict[float, list[list[str]]] = {}
rms = {kind: (load_reward_model(d), Tokenizer(d / TOKENIZER_FILE)) for kind, d in rm_dirs.items()}


def gold_utility(record: dict, response: str) -> float:
    return world.utility(record["messages"], response, "helpfulness" if record["category"] == "helpful" else "safety")


for spec in sys.argv[4:]:
    select, temperature, with_greedy, epochs, replay, lr = spec.split(":")
    candidates = [[] for _ in records]
    if select != "greedy":
        t = float(temperature)
        if t not in samples_at:
            samples_at[t], _ = sample_answers(model, tokenizer, prompts, k, 64, t, 1.0, 0, 16)
        candidates = [list(group) for group in samples_at[t]]
    if select == "greedy" or with_greedy == "1":
        candidates = [group + [g] for group, g in zip(candidates, greedy)]
    flat = [(i, c) for i, group in enumerate(candidates) for c in group if c]
    rc = score(rms, [records[i] for i, _ in flat], [c for _, c in flat])["rc"]
    value = [gold_utility(records[i], c) for i, c in flat] if select == "gold" else rc.tolist()
    best = select_best([{**records[i], "response": c, "rc": v} for (i, c), v in zip(flat, value)])
    dialogs = [{"messages": [*b["messages"], {"role": "assistant", "content": b["response"]}]} for b in best]
    dialogs += random.Random(0).sample(demos, min(int(replay), len(demos)))
    directory = out / spec.replace(":", "_").replace(".", "p")
    write_jsonl(directory / "data.jsonl", dialogs)
    helpful = [b for b in best if b["category"] == "helpful"]
    selected_gold = sum(world.helpfulness(b["messages"], b["response"]) for b in helpful) / len(helpful)
    options = sft.FinetuneOptions(sft_preset="demo", epochs=int(epochs), lr=float(lr))
    sft.main(sft.finetune_args(options, init=policy, data=[directory / "data.jsonl"], out=directory / "sft", seed=0))
    answers = model_answers(directory / "sft" / "model", prompt_sets, plan, 0)
    metrics = gold_metrics(answers, prompt_sets, judges, plan, reference)
    wins = metrics["win_vs_reference"]
    print(json.dumps({
        "spec": spec, "selected_gold_helpful": round(selected_gold, 4), "greedy_gold_helpful": round(greedy_gold, 4),
        "examples": len(dialogs),
        "helpfulness": [round(metrics["helpful_helpfulness"], 4), round(metrics["sampled"]["helpful_helpfulness"], 4)],
        "win_rate": [round(wins[m]["win_rate"], 4) for m in ("greedy", "sampled")],
        "false_refusal": [round(metrics["false_refusal_rate"], 4), round(metrics["sampled"]["false_refusal_rate"], 4)],
        "violation": [round(metrics["violation_rate"], 4), round(metrics["sampled"]["violation_rate"], 4)],
    }), flush=True)
