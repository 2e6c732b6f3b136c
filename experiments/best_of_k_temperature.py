"""Best of K by gold at several sampling temperatures: the gold helpfulness of a random sample, of
the helpfulness RM's pick and of gold's pick (the reward stage's `best_of_k_by_gold`, which samples
at temperature 1 only; docs/results.md).

    python experiments/best_of_k_temperature.py POLICY RM_HELPFULNESS WORLD_DIR 1.0,0.7,0.5
"""

import json
import sys
from pathlib import Path

import torch

from llamaforge.checkpoint import TOKENIZER_FILE, load_model_and_tokenizer, load_reward_model
from llamaforge.eval.reward import response_scores
from llamaforge.eval.selection import selection_metrics
from llamaforge.pipeline.evaluation import CORRECT_AT, gold_judges, read_jsonl
from llamaforge.rlhf.rejection_sampling import sample_answers
from llamaforge.tokenizer import Tokenizer
from llamaforge.world import World

K, PROMPTS = 8, 200
policy, rm_dir, world_dir = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
prompts = [r["messages"] for r in read_jsonl(world_dir / "prompts_helpful_test.jsonl")[:PROMPTS]]
judges = gold_judges(World(0))
model, tokenizer = load_model_and_tokenizer(policy)
rm, rm_tokenizer = load_reward_model(rm_dir), Tokenizer(rm_dir / TOKENIZER_FILE)
flat_prompts = [p for p in prompts for _ in range(K)]
for temperature in (float(t) for t in sys.argv[4].split(",")):
    samples, _ = sample_answers(model, tokenizer, prompts, K, 64, temperature, 1.0, 0, batch_prompts=16)
    flat = [s for group in samples for s in group]
    rm_scores = response_scores(rm, rm_tokenizer, flat_prompts, flat).view(len(prompts), K)
    gold = torch.tensor([judges.helpfulness(p, s) for p, s in zip(flat_prompts, flat)]).view(len(prompts), K)
    metrics = selection_metrics(gold, rm_scores, CORRECT_AT)
    print(temperature, json.dumps({k: v for k, v in metrics.items() if not k.startswith("fig7")}))
