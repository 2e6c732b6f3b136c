"""What in a helpfulness reward model's score tracks the annotators and gold (docs/results.md, "What
the helpfulness reward model reads"). For the held-out helpfulness pairs of a pipeline run's
reward stage, and for the pairs of its last weekly batch (which the reward model trained on), the
accuracy of each feature of an answer against the annotators (all pairs, significantly better) and
against gold (the pairs gold does not tie):

- rm: the reward stage's helpfulness RM; rm_head: its head alone (the score minus λ times its
  trunk's mean log-probability of the answer); rm_trunk_mean: that log-probability alone;
- sft_mean / sft_sum / sft_min: the SFT model's mean, summed and lowest log-probability of the
  answer's tokens; rm_trunk_min: the lowest under the RM's trunk;
- pmi_mean: sft_mean minus the same answer's mean log-probability after an unrelated question;
- len: the answer's length in tokens.

    python experiments/rm_features.py RUN_DIR
"""

import sys
from pathlib import Path

import torch

from llamaforge.checkpoint import load_for_scoring, load_model
from llamaforge.data.preferences import read_all
from llamaforge.data.scoring import encode_response, score_inputs
from llamaforge.model import padded_positions_and_mask
from llamaforge.world import World

BATCH = 32
UNRELATED = [{"role": "user", "content": "Hello."}]

run = Path(sys.argv[1])
world = World(0)
rm, tokenizer = load_for_scoring(run / "reward/rm_helpfulness/model")
sft = load_model(run / "sft/model").eval()
weight = float(rm.likelihood_weight)


def encoded_batches(prompts, responses):
    for start in range(0, len(responses), BATCH):
        yield score_inputs([encode_response(tokenizer, p, r, 512)
                            for p, r in zip(prompts[start : start + BATCH], responses[start : start + BATCH])])


@torch.no_grad()
def answer_logprobs(model, prompts, responses) -> list[torch.Tensor]:
    """Each answer's per-token log-probabilities under `model` (a Llama)."""
    out = []
    for tokens, real, answer in encoded_batches(prompts, responses):
        hidden = model.hidden_states(tokens, *padded_positions_and_mask(real))
        logp = torch.log_softmax(model.output(hidden[:, :-1]).float(), -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
        out += [logp[i][answer[i, 1:]] for i in range(len(tokens))]
    return out


@torch.no_grad()
def features(prompts, responses) -> dict[str, torch.Tensor]:
    sft_lp = answer_logprobs(sft, prompts, responses)
    unrelated_lp = answer_logprobs(sft, [UNRELATED] * len(responses), responses)
    trunk_lp = answer_logprobs(rm.trunk, prompts, responses)
    score = torch.cat([rm(*batch).float() for batch in encoded_batches(prompts, responses)])
    stat = lambda lps, f: torch.stack([f(x) for x in lps])  # noqa: E731
    return {
        "rm": score,
        "rm_head": score - weight * stat(trunk_lp, torch.mean),
        "rm_trunk_mean": stat(trunk_lp, torch.mean),
        "rm_trunk_min": stat(trunk_lp, torch.min),
        "sft_mean": stat(sft_lp, torch.mean),
        "sft_sum": stat(sft_lp, torch.sum),
        "sft_min": stat(sft_lp, torch.min),
        "pmi_mean": stat(sft_lp, torch.mean) - stat(unrelated_lp, torch.mean),
        "len": torch.tensor([float(len(x)) for x in sft_lp]),
    }


def percent(hits: torch.Tensor) -> float:
    return round(100 * hits.float().mean().item(), 1)


for name, path in (("held-out test", "reward/test_helpfulness/helpfulness/preferences.jsonl"),
                   ("last weekly batch (trained on)", "reward/batch_02/helpfulness/preferences.jsonl")):
    pairs = [p for p in read_all([run / path], "error", False)[0] if not p.is_safety]
    prompts = [list(p.prompt) for p in pairs]
    chosen, rejected = features(prompts, [p.chosen for p in pairs]), features(prompts, [p.rejected for p in pairs])
    gold_chosen = torch.tensor([world.utility(list(p.prompt), p.chosen, "helpfulness") for p in pairs])
    gold_rejected = torch.tensor([world.utility(list(p.prompt), p.rejected, "helpfulness") for p in pairs])
    significant = torch.tensor([p.rating == "significantly_better" for p in pairs])
    decided = gold_chosen != gold_rejected
    print(f"== {name}: {len(pairs)} pairs, {int(significant.sum())} significantly better, "
          f"gold decides {int(decided.sum())}")
    print(f"{'gold':14s} all {percent((gold_chosen > gold_rejected) + 0.5 * decided.logical_not())} "
          f"sig {percent(((gold_chosen > gold_rejected) + 0.5 * decided.logical_not())[significant])} "
          f"annotators agree with gold {percent((gold_chosen > gold_rejected)[decided])}")
    for key in chosen:
        c, r = chosen[key], rejected[key]
        vs_annotators = (c > r).float() + 0.5 * (c == r).float()
        vs_gold = torch.where(c == r, 0.5, ((c > r) == (gold_chosen > gold_rejected)).float())
        print(f"{key:14s} all {percent(vs_annotators)} sig {percent(vs_annotators[significant])} "
              f"agrees with gold {percent(vs_gold[decided])}")
