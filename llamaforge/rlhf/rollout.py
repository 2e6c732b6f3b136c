"""PPO's experience (paper §3.2.3): responses sampled from the policy, laid out as token tensors,
and what the models say about them (log-probabilities, values, rewards).

A row is one prompt's ids followed by its response's ids, right-padded. Per-token tensors are
(B, T - 1) and aligned with the *predicted* tokens `tokens[:, 1:]`: entry t is about token t + 1,
computed from the hidden state at position t (the state before that token was chosen), and
`action_mask` is True exactly on the response's tokens. A response ends with EOS, or is truncated
(it hit the token limit first): the reward models still score it where it ends (its last real
token; padding is never scored), and the PPO loop penalizes it (ppo.PpoArgs.truncation_penalty).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from llamaforge.data.prompts import is_safety_prompt
from llamaforge.generate import generate
from llamaforge.model import Llama, RewardModel, padded_positions_and_mask
from llamaforge.rlhf.rewards import piecewise_reward
from llamaforge.tokenizer import Tokenizer

RewardFn = Callable[[list[dict], Tensor, Tensor, Tensor], dict[str, Tensor]]
"""(prompt records, tokens (B, T), real (B, T), action_mask (B, T - 1)) -> {"rc": (B,) in (0, 1),
and any other (B,) reward to log, e.g. "rh", "rs"}. `rc` is what PPO maximizes (shaped by
rewards.shaped_reward)."""


@dataclass
class Rollout:
    """This process's sampled responses of one PPO iteration, one row per prompt."""

    records: list[dict]
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    sample_logprobs: list[list[float]]  # generate's own log-probabilities (for the mismatch check)
    truncated: list[bool]  # no EOS at the end: the token limit (or the context) cut it


@torch.no_grad()
def sample_rollout(
    model: Llama, tokenizer: Tokenizer, records: list[dict], seeds: list[int], max_new_tokens: int,
    temperature: float, top_p: float, batch_size: int,
) -> Rollout:
    """One response per prompt record, row i sampled with seed seeds[i] (whatever the batching)."""
    budget = model.config.max_seq_len - max_new_tokens
    prompt_ids = [tokenizer.encode_dialog_prompt(r["messages"])[-budget:] for r in records]
    responses, logprobs = [], []
    for start in range(0, len(records), batch_size):
        new, lp = generate(model, prompt_ids[start : start + batch_size], max_new_tokens, temperature, top_p,
                           eos_id=tokenizer.eos_id, seeds=seeds[start : start + batch_size])
        responses += new
        logprobs += lp
    truncated = [r[-1] != tokenizer.eos_id for r in responses]
    return Rollout(records, prompt_ids, responses, logprobs, truncated)


def sequence_batch(prompt_ids: list[list[int]], response_ids: list[list[int]], device) -> dict[str, Tensor]:
    """sequences, real (B, T) and action_mask (B, T - 1) of prompt + response rows, right-padded."""
    rows = [p + r for p, r in zip(prompt_ids, response_ids)]
    T = max(len(row) for row in rows)
    tokens = torch.zeros(len(rows), T, dtype=torch.long)
    real = torch.zeros(len(rows), T, dtype=torch.bool)
    action_mask = torch.zeros(len(rows), T - 1, dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        tokens[i, : len(p) + len(r)] = torch.tensor(p + r)
        real[i, : len(p) + len(r)] = True
        action_mask[i, len(p) - 1 : len(p) + len(r) - 1] = True  # predicting response token j from position j - 1
    return {"sequences": tokens.to(device), "real": real.to(device), "action_mask": action_mask.to(device)}


def token_logprobs(model: Llama, tokens: Tensor, real: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """log pi(tokens[:, t + 1] | tokens[:, :t + 1]) under softmax(logits / temperature), the
    distribution `generate` samples from, and the entropy of that distribution (no gradient):
    both (B, T - 1) float32. Positions and attention come from `real`, so padding changes nothing."""
    hidden = model.hidden_states(tokens, *padded_positions_and_mask(real))
    logits = model.output(hidden[:, :-1]).float() / max(temperature, 1e-6)
    logp = torch.log_softmax(logits, dim=-1)  # (B, T - 1, V)
    chosen = logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)
    with torch.no_grad():
        entropy = -(logp.exp() * logp).sum(-1)
    return chosen, entropy


class PolicyWithValue(nn.Module):
    """The policy being trained and its value model as one module: one optimizer, one checkpoint,
    and one root for FSDP2 (whose hooks gather the parameters of the module called)."""

    def __init__(self, policy: Llama, value: RewardModel, temperature: float):
        super().__init__()
        self.policy, self.value, self.temperature = policy, value, temperature

    def forward(self, tokens: Tensor, real: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(log-probabilities, entropy, values), each (B, T - 1) and aligned with tokens[:, 1:]:
        the value of a token is read at the position it is predicted from, the state it follows."""
        logprobs, entropy = token_logprobs(self.policy, tokens, real, self.temperature)
        values = self.value.token_scores(tokens, real)[:, :-1].float()
        return logprobs, entropy, values


def reward_model_fn(helpfulness: RewardModel, safety: RewardModel, reward: str = "piecewise") -> RewardFn:
    """The PPO reward from the two reward models. "piecewise": Rc of eq. 3 (the paper's);
    "helpfulness" / "safety": one model's sigmoid score alone (the §4.2 ablation). Each model
    reads the sequence at its last real token. Also returns both models' sigmoid scores."""
    if reward not in ("piecewise", "helpfulness", "safety"):
        raise ValueError(f"reward must be piecewise, helpfulness or safety, not {reward!r}")

    @torch.no_grad()
    def score(records: list[dict], tokens: Tensor, real: Tensor, action_mask: Tensor) -> dict[str, Tensor]:
        answer = torch.nn.functional.pad(action_mask, (1, 0))  # (B, T): the response's tokens themselves
        rh, rs = helpfulness(tokens, real, answer).float(), safety(tokens, real, answer).float()
        is_safety = torch.tensor([is_safety_prompt(r) for r in records], dtype=torch.bool, device=tokens.device)
        rc = {"piecewise": piecewise_reward(rs, rh, is_safety), "helpfulness": torch.sigmoid(rh),
              "safety": torch.sigmoid(rs)}[reward]
        return {"rc": rc, "rh": torch.sigmoid(rh), "rs": torch.sigmoid(rs)}

    return score
