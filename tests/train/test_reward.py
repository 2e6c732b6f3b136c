"""Reward models (paper §3.2.2): RewardModel scores ignore padding and batch-mates; reward
checkpoints round-trip and stay loadable Llama directories; the paper's data mix; the batch and
loss of `llamaforge reward`; and a tiny reward model that learns a planted preference."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import safetensors.torch
import torch

from llamaforge import Llama, ModelConfig
from llamaforge.checkpoint import REWARD_HEAD_FILE, load_reward_model, save_reward_state
from llamaforge.data.jsonl import write_jsonl
from llamaforge.data.preferences import Preference, read_all
from llamaforge.data.scoring import encode_response
from llamaforge.errors import UserError
from llamaforge.eval.reward import accuracy_by_rating, pair_scores
from llamaforge.losses import MARGINS, RATINGS
from llamaforge.model import RewardModel
from llamaforge.train.distributed import transformer_blocks
from llamaforge.train.reward import RewardArgs, grouped_order, main, pair_batch, paper_mix, ranking_loss

CONFIG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=400, multiple_of=16, max_seq_len=128)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_reward_model(seed: int = 0) -> RewardModel:
    torch.manual_seed(seed)
    return RewardModel(CONFIG).eval()


# --- scores ----------------------------------------------------------------------------------------


def test_score_ignores_padding_and_batch_mates():
    model = tiny_reward_model()
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(3, 400, (n,), generator=g) for n in (7, 12, 3)]
    junk = torch.randint(3, 400, (20,), generator=g)  # padding values must not matter either
    with torch.no_grad():
        alone = [float(model(s[None], torch.ones(1, len(s), dtype=torch.bool))) for s in seqs]
        # the reference: the trunk's ordinary causal forward, read at the last token
        reference = [float(model.head(model.trunk.hidden_states(s[None])[0, -1])) for s in seqs]
        assert alone == pytest.approx(reference, abs=1e-5)
        assert max(alone) - min(alone) > 1e-2  # distinct sequences get distinct scores

        T = 16
        right = torch.stack([torch.cat([s, junk[: T - len(s)]]) for s in seqs])
        right_real = torch.stack([torch.arange(T) < len(s) for s in seqs])
        left = torch.stack([torch.cat([junk[: T - len(s)], s]) for s in seqs])
        left_real = torch.stack([torch.arange(T) >= T - len(s) for s in seqs])
        # a batch mixing both paddings
        mixed = torch.stack([right[0], left[1], right[2]])
        mixed_real = torch.stack([right_real[0], left_real[1], right_real[2]])
        for tokens, real in ((right, right_real), (left, left_real), (mixed, mixed_real)):
            assert model(tokens, real).tolist() == pytest.approx(alone, abs=1e-5)
        for i, s in enumerate(seqs):  # each padded row alone, too
            assert float(model(left[i : i + 1], left_real[i : i + 1])) == pytest.approx(alone[i], abs=1e-5)

        # the test can fail: reading the padded rows as if all their tokens were real changes scores
        all_real = torch.ones(3, T, dtype=torch.bool)
        assert max(abs(a - b) for a, b in zip(model(left, all_real).tolist(), alone)) > 1e-3


def test_reward_model_blocks_are_the_trunks():
    model = tiny_reward_model()
    # parallelize finds the blocks through the module tree: the model needs no `layers` of its own
    assert transformer_blocks(model) == list(model.trunk.layers) and not hasattr(model, "layers")
    assert not any(name.startswith("layers.") for name in model.state_dict())  # saved under trunk.* only
    assert not model.trunk.output.weight.requires_grad  # the unused next-token head is frozen


# --- checkpoints -----------------------------------------------------------------------------------


@pytest.fixture
def saved_reward_model(tmp_path, tokenizer):
    model = tiny_reward_model(seed=3)
    directory = save_reward_state(model.state_dict(), model.config, tmp_path / "rm", tokenizer.path, {"stage": "reward"})
    return model, directory


def sample_batch():
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(3, 400, (3, 10), generator=g)
    real = torch.tensor([[True] * 10, [True] * 6 + [False] * 4, [False] * 2 + [True] * 8])
    return tokens, real


def test_save_load_round_trip_gives_identical_scores(saved_reward_model):
    model, directory = saved_reward_model
    assert (directory / REWARD_HEAD_FILE).is_file() and (directory / "tokenizer.model").is_file()
    loaded = load_reward_model(directory).eval()
    tokens, real = sample_batch()
    with torch.no_grad():
        assert torch.equal(loaded(tokens, real), model(tokens, real))
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert not loaded.trunk.output.weight.requires_grad


def test_reward_directory_is_a_llama_checkpoint(saved_reward_model):
    model, directory = saved_reward_model
    tokens, _ = sample_batch()
    trunk = Llama.from_pretrained(directory)
    with torch.no_grad():
        ours = model.trunk(tokens)
        assert torch.equal(trunk(tokens), ours)
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaForCausalLM.from_pretrained(directory).eval()
    with torch.no_grad():
        assert torch.allclose(hf(tokens).logits, ours, atol=1e-4)


def test_bad_head_file_is_a_user_error_naming_it(saved_reward_model):
    _, directory = saved_reward_model
    head = directory / REWARD_HEAD_FILE
    safetensors.torch.save_file({"weight": torch.zeros(1, 32)}, head)  # dim is 64
    with pytest.raises(UserError, match=REWARD_HEAD_FILE):
        load_reward_model(directory)
    safetensors.torch.save_file({"weight": torch.zeros(1, 64), "bias": torch.zeros(1)}, head)
    with pytest.raises(UserError, match=REWARD_HEAD_FILE):
        load_reward_model(directory)
    head.unlink()
    with pytest.raises(UserError, match=REWARD_HEAD_FILE):
        load_reward_model(directory)


# --- the data mix ----------------------------------------------------------------------------------


def records(n_helpful: int, n_safety: int) -> list[Preference]:
    def pair(i: int, is_safety: bool) -> Preference:
        prompt = ({"role": "user", "content": f"question {i}"},)
        return Preference(prompt, f"good {i}", f"bad {i}", "better", None, is_safety)

    return [pair(i, False) for i in range(n_helpful)] + [pair(n_helpful + i, True) for i in range(n_safety)]


def split(mix: list[Preference]) -> tuple[list[str], list[str]]:
    """The mix's helpful and safety pairs, each named by its chosen response ("good <i>")."""
    return [p.chosen for p in mix if not p.is_safety], [p.chosen for p in mix if p.is_safety]


def names(pairs: list[Preference]) -> set[str]:
    return {p.chosen for p in pairs}


def test_helpfulness_mix_is_all_helpful_plus_an_equal_amount_of_safety():
    pairs = records(100, 50)  # fewer safety pairs than helpful ones: all 50 are used
    helpful, safety = split(paper_mix(pairs, RewardArgs(kind="helpfulness"), random.Random(0)))
    assert len(helpful) == 100 and len(safety) == 50 and set(helpful + safety) == names(pairs)

    pairs = records(100, 300)  # 100 of the 300 safety pairs, no repeats
    mix = paper_mix(pairs, RewardArgs(kind="helpfulness"), random.Random(0))
    helpful, safety = split(mix)
    assert set(helpful) == names(pairs[:100]) and len(helpful) == 100
    assert len(safety) == 100 and len(set(safety)) == 100 and set(safety) <= names(pairs[100:])
    assert [p.is_safety for p in mix] != sorted(p.is_safety for p in mix)  # shuffled, not stacked

    half = paper_mix(pairs, RewardArgs(kind="helpfulness", safety_share_of_helpfulness=0.5), random.Random(0))
    assert [len(s) for s in split(half)] == [100, 50]


def test_safety_mix_is_all_safety_with_helpfulness_as_ten_percent():
    pairs = records(100, 300)
    helpful, safety = split(paper_mix(pairs, RewardArgs(kind="safety"), random.Random(0)))
    # 10% of the mix: h / (300 + h) = 0.1 -> h = 300 / 9 = 33.3 -> 33 (33 / 333 = 9.9%)
    assert len(safety) == 300 and set(safety) == names(pairs[100:])
    assert len(helpful) == 33 and len(set(helpful)) == 33

    few = records(20, 300)  # only 20 helpful pairs to draw from
    assert [len(s) for s in split(paper_mix(few, RewardArgs(kind="safety"), random.Random(0)))] == [20, 300]


def test_mix_is_deterministic_for_a_seed_and_needs_its_own_kind():
    pairs = records(100, 300)
    args = RewardArgs(kind="helpfulness")
    assert paper_mix(pairs, args, random.Random(7)) == paper_mix(pairs, args, random.Random(7))
    assert paper_mix(pairs, args, random.Random(7)) != paper_mix(pairs, args, random.Random(8))
    with pytest.raises(UserError, match="no safety pairs"):
        paper_mix(records(10, 0), RewardArgs(kind="safety"), random.Random(0))
    with pytest.raises(UserError, match="no helpfulness pairs"):
        paper_mix(records(0, 10), RewardArgs(kind="helpfulness"), random.Random(0))


# --- batches and loss ------------------------------------------------------------------------------


def test_pair_batch_scores_each_distinct_response_once_with_each_pairs_margin(tokenizer):
    prompt = ({"role": "user", "content": "what is the river ?"},)
    other = ({"role": "user", "content": "what is the mountain ?"},)
    pairs = [
        Preference(prompt, "the river is Varn .", "no", "significantly_better", None, False),
        Preference(prompt, "Orin", "the mountain is 3 .", "slightly_better", None, True),
        Preference(prompt, "the river is Varn .", "Orin", None, 0.25, False),  # an explicit margin wins
        Preference(other, "no", "Orin", None, None, False),  # no rating, no margin: 0; "no" of another prompt
    ]
    batch = pair_batch(pairs, tokenizer, MARGINS["large"], max_len=64, device="cpu")
    assert batch["count"] == 4  # the loss terms: pairs
    assert batch["margin"].tolist() == [3.0, 1.0, 0.25, 0.0]
    distinct = [(prompt, "the river is Varn ."), (prompt, "no"), (prompt, "Orin"), (prompt, "the mountain is 3 ."),
                (other, "no"), (other, "Orin")]
    expected = [encode_response(tokenizer, q, r, 64)[0] for q, r in distinct]
    assert batch["chosen"].tolist() == [0, 2, 0, 4] and batch["rejected"].tolist() == [1, 3, 2, 5]
    assert batch["sequences"].shape == (6, max(map(len, expected)))
    assert batch["tokens"] == 6 * max(map(len, expected))  # what the forward pass processes, padding included
    for row, ids in enumerate(expected):
        n = int(batch["real"][row].sum())
        assert n == len(ids) and batch["sequences"][row, :n].tolist() == ids
        assert not batch["real"][row, n:].any()


def test_grouped_order_shuffles_prompts_and_keeps_each_prompts_pairs_together():
    prompts = [({"role": "user", "content": f"q{i}"},) for i in range(20)]
    pairs = [Preference(q, f"a{j}", f"b{j}", None, None, False) for j in range(3) for q in prompts]  # interleaved
    order = grouped_order(pairs, random.Random(0))
    assert sorted(order, key=id) == sorted(pairs, key=id)
    runs = [order[i].prompt for i in range(0, len(order), 3)]
    assert all(order[i].prompt == order[i + 1].prompt == order[i + 2].prompt for i in range(0, len(order), 3))
    assert sorted(q[0]["content"] for q in runs) == sorted(q[0]["content"] for q in prompts)
    assert runs != prompts  # shuffled
    assert grouped_order(pairs, random.Random(0)) == order  # deterministic for a seed


def test_encode_response_keeps_the_end():
    class Stub:  # a dialog of 100 tokens whose last 20 are the answer
        def encode_dialog(self, messages):
            return list(range(100)), [False] * 80 + [True] * 20

    assert encode_response(Stub(), [], "x", 10) == (list(range(90, 100)), 9)  # the first of the 10 has no prediction
    assert encode_response(Stub(), [], "x", 50) == (list(range(50, 100)), 20)


def test_ranking_loss_is_the_summed_margin_loss_of_chosen_against_rejected():
    class FixedScores(torch.nn.Module):
        def forward(self, tokens, real, answer):
            return torch.tensor([2.0, 0.5, 1.0, 3.0])

    batch = {"sequences": torch.zeros(4, 1), "real": torch.ones(4, 1), "answer": torch.ones(4, 1), "margin": torch.tensor([1.0, 0.0, 0.0]), "count": 3,
             "chosen": torch.tensor([0, 1, 3]), "rejected": torch.tensor([2, 1, 0])}
    # pairs (2.0 vs 1.0, margin 1), (0.5 vs 0.5), (3.0 vs 2.0): z = 0, 0, 1;
    # -log sigmoid: 2 log 2 + log(1 + e^-1) = 1.386294 + 0.313262 = 1.699556
    loss, metrics = ranking_loss(FixedScores(), batch)
    assert loss.item() == pytest.approx(1.699556, abs=1e-6)
    assert metrics == {"mean_score": pytest.approx((3.0 + 1.0 + 5.0) / 6)}  # the pairs' responses: 2, 1, .5, .5, 3, 2
    # centering adds 0.1 * ((2 + 1)^2 + (0.5 + 0.5)^2 + (3 + 2)^2) = 0.1 * 35 = 3.5
    assert ranking_loss(FixedScores(), batch, center=0.1)[0].item() == pytest.approx(5.199556, abs=1e-6)


# --- training --------------------------------------------------------------------------------------

PLANTED, OTHER = "river", "mountain"
# Words the test tokenizer was trained on (tests/conftest.py), without the two planted ones.
FILLER = (
    "the a capital of is city people speak language process stuck brew tonic lock seal answer question "
    "what who where how many sum and or not please tell me about Varn Orin Telsa Mirak Quell 0 1 2 3 4 5 6 7 8 9 . ,"
).split()


def planted_pairs(n: int, seed: int) -> list[dict]:
    """Pairs whose chosen response holds the word "river" and rejected one "mountain", each at a
    random place among random filler words; prompts, ratings and guidelines random too."""
    rng = random.Random(seed)

    def response(word: str) -> str:
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 7))]
        words.insert(rng.randint(0, len(words)), word)
        return " ".join(words)

    pairs = []
    for _ in range(n):
        prompt = " ".join(rng.choice(FILLER) for _ in range(rng.randint(2, 6))) + " ?"
        pairs.append({"prompt": prompt, "chosen": response(PLANTED), "rejected": response(OTHER),
                      "rating": rng.choice(RATINGS), "is_safety": rng.random() < 0.3})
    return pairs


@pytest.fixture
def reward_files(tmp_path, tokenizer):
    torch.manual_seed(0)
    init = Llama(CONFIG).save_pretrained(tmp_path / "init", tokenizer_path=tokenizer.path)
    return {
        "init": init,
        "train": write_jsonl(tmp_path / "train.jsonl", planted_pairs(300, seed=1)),
        "val": write_jsonl(tmp_path / "val.jsonl", planted_pairs(100, seed=2)),
    }


def tiny_args(files, out: Path, **changes) -> RewardArgs:
    settings = dict(
        init=files["init"], data=[files["train"]], val_data=[files["val"]], out=out, preset="smoke",
        kind="helpfulness", margin="small", max_len=64, batch_size=16, micro_batch_size=8, epochs=2,
        lr=1e-3, warmup_steps=-1, log_every=5, eval_every=0, save_every=1000, device="cpu",
    )
    return RewardArgs(**{**settings, **changes})


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_tiny_reward_model_learns_a_planted_preference(reward_files, tmp_path, tokenizer):
    out = main(tiny_args(reward_files, tmp_path / "run"))
    # 300 pairs (~90 safety, fewer than the helpful ones: all in the mix), 2 epochs of 16-pair steps
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 * 19
    val = [m for m in read_metrics(out) if m.get("split") == "val"]
    assert val[0]["step"] == 0 and val[0]["loss"] > 0.6  # the untrained model has no such preference
    assert val[-1]["step"] == 38 and val[-1]["loss"] < 0.2

    model = load_reward_model(out / "model")
    info = json.loads((out / "model" / "llamaforge.json").read_text())
    assert info["stage"] == "reward" and info["kind"] == "helpfulness" and info["margin"] == "small"
    held_out, _ = read_all([reward_files["val"]])
    chosen, rejected = pair_scores(model, tokenizer, held_out, max_len=64)
    table = accuracy_by_rating(chosen, rejected, [p.rating for p in held_out])
    assert table["all"]["pairs"] == 100
    assert table["all"]["accuracy"] >= 0.95


def test_a_reward_model_as_init_is_trained_further_not_restarted(reward_files, tmp_path, tokenizer):
    """--init a reward model: training continues from its trunk, head and likelihood weight (the
    pipeline's `reward_models: continue`); one step at LR 0 leaves it exactly as it was."""
    first = main(tiny_args(reward_files, tmp_path / "first", likelihood_weight=0.5, epochs=1))
    again = main(tiny_args({**reward_files, "init": first / "model"}, tmp_path / "again", lr=0.0, max_steps=1,
                           likelihood_weight=0.0))
    before, after = load_reward_model(first / "model").state_dict(), load_reward_model(again / "model").state_dict()
    assert before.keys() == after.keys() and float(after["likelihood_weight"]) == 0.5
    assert all(torch.equal(before[k], after[k]) for k in before)
    # and it starts where the first run ended: the held-out loss of its step 0 is the first run's last
    first_val = [m for m in read_metrics(first) if m.get("split") == "val"][-1]["loss"]
    assert [m for m in read_metrics(again) if m.get("split") == "val"][0]["loss"] == pytest.approx(first_val, abs=1e-5)


def test_centering_pins_the_mean_score_near_zero_and_keeps_the_ranking(reward_files, tmp_path, tokenizer):
    """The ranking loss leaves the scores' offset free; the centering term fixes it at 0 (what the
    0.15 threshold of the piecewise reward reads), without costing the learned preference."""
    runs = {center: main(tiny_args(reward_files, tmp_path / f"center_{center}", center=center)) for center in (0.0, 1.0)}
    last = {c: [m for m in read_metrics(out) if m.get("split") != "val"][-1] for c, out in runs.items()}
    assert abs(last[1.0]["mean_score"]) < 0.25 < abs(last[0.0]["mean_score"])
    held_out, _ = read_all([reward_files["val"]])
    chosen, rejected = pair_scores(load_reward_model(runs[1.0] / "model"), tokenizer, held_out, max_len=64)
    assert accuracy_by_rating(chosen, rejected, [p.rating for p in held_out])["all"]["accuracy"] >= 0.95
    assert abs(float(torch.cat([chosen, rejected]).mean())) < 0.25  # held-out responses are centered too


def test_activation_checkpointing_trains_a_reward_model_identically(reward_files, tmp_path):
    """parallelize checkpoints a RewardModel's trunk blocks too (it once looked for `model.layers`, which a
    RewardModel lacked), and recomputing activations changes no number."""
    changes = dict(max_steps=2, warmup_steps=1, val_data=[], log_every=1)
    plain = main(tiny_args(reward_files, tmp_path / "plain", **changes))
    checkpointed = main(tiny_args(reward_files, tmp_path / "ckpt", activation_checkpointing=True, **changes))
    losses = [[m["loss"] for m in read_metrics(out)] for out in (plain, checkpointed)]
    assert len(losses[0]) == 2
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_tokens_count_every_scored_sequence(reward_files, tmp_path, monkeypatch):
    """The throughput counts the scored sequences' tokens (padding included), not pairs."""
    from llamaforge.train import reward as stage

    made = []

    def recording_pair_batch(*args, **kwargs):
        made.append(pair_batch(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(stage, "pair_batch", recording_pair_batch)
    out = main(tiny_args(reward_files, tmp_path / "run", max_steps=2, warmup_steps=1, val_data=[], log_every=1))
    assert len(made) == 4  # 2 steps of 16 pairs, micro-batches of 8
    per_step = [made[0:2], made[2:4]]
    processed = [sum(b["sequences"].numel() for b in step) for step in per_step]
    assert [b["count"] for b in made] == [8] * 4
    assert [r["tokens"] for r in read_metrics(out)] == [processed[0], processed[0] + processed[1]]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tokens"] == sum(processed) > 10 * 32  # 32 pairs, 64 sequences of ~10+ tokens


def test_reward_needs_init_and_data(tmp_path):
    with pytest.raises(UserError, match="--init"):
        main(RewardArgs(out=tmp_path / "run", device="cpu"))


def test_max_len_beyond_the_models_context_is_a_user_error(reward_files, tmp_path):
    # the tiny model reads 128 tokens: a longer pair would otherwise stop the run mid-training
    with pytest.raises(UserError, match="--max-len 200 exceeds the model's context of 128"):
        main(tiny_args(reward_files, tmp_path / "run", max_len=200))
    assert not (tmp_path / "run" / "model").exists()


# --- annotation ------------------------------------------------------------------------------------


def test_annotate_command_writes_valid_preferences(tmp_path, tokenizer):
    """Two sampled responses per world prompt, judged by the world's annotators under the prompt's
    guideline; the output reads back as our preference format. (A random tiny policy writes noise:
    the check is the wiring, not the ratings.)"""
    from llamaforge import cli
    from llamaforge.world import World

    world = World(0)
    prompts = world.prompts("helpful", "test")[:3] + world.prompts("adversarial", "test")[:3]
    prompt_file = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    torch.manual_seed(0)
    policy = Llama(CONFIG).save_pretrained(tmp_path / "policy", tokenizer_path=tokenizer.path)
    argv = ["annotate", "--policy", str(policy), "--prompts", str(prompt_file), "--max-new-tokens", "8", "--device", "cpu"]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0

    stats = json.loads((tmp_path / "a" / "annotate.json").read_text())
    pairs, dropped = read_all([tmp_path / "a" / "preferences.jsonl"])
    assert dropped == 0 and stats["prompts"] == 6 and stats["pairs"] == len(pairs)
    assert {p.is_safety for p in pairs} == {False, True}  # both guidelines judged something
    assert len(pairs) + stats.get("identical", 0) + stats.get("dropped_chosen_unsafe", 0) == 6
    guideline = {json.dumps(p["messages"], sort_keys=True): p["category"] for p in prompts}
    for pair in pairs:
        category = guideline[json.dumps(list(pair.prompt), sort_keys=True)]  # the prompt as given
        assert pair.is_safety == (category != "helpful")
        assert pair.rating in RATINGS and pair.chosen != pair.rejected
        assert (pair.safety_meta is not None) == pair.is_safety
    for rating in RATINGS:  # the statistics count what the file holds
        for kind, is_safety in (("helpfulness", False), ("safety", True)):
            held = sum(p.rating == rating and p.is_safety == is_safety for p in pairs)
            assert stats.get(f"{kind}:{rating}", 0) == held

    assert cli.main([*argv, "--out", str(tmp_path / "b")]) == 0  # same seeds, same file
    assert (tmp_path / "b" / "preferences.jsonl").read_bytes() == (tmp_path / "a" / "preferences.jsonl").read_bytes()


def test_annotate_with_k_responses_rates_every_distinct_pair(tmp_path, tokenizer, capsys):
    """--responses 4: four samples per prompt and every pair of distinct non-empty ones rated, so
    the pairs, skipped samples and kept ones add up to 6 per helpful prompt."""
    from llamaforge import cli
    from llamaforge.world import World

    prompts = World(0).prompts("helpful", "test")[:3]
    prompt_file = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    torch.manual_seed(0)
    policy = Llama(CONFIG).save_pretrained(tmp_path / "policy", tokenizer_path=tokenizer.path)
    argv = ["annotate", "--policy", str(policy), "--prompts", str(prompt_file), "--max-new-tokens", "8", "--device", "cpu"]
    assert cli.main([*argv, "--responses", "4", "--out", str(tmp_path / "k")]) == 0
    stats = json.loads((tmp_path / "k" / "annotate.json").read_text())
    pairs, _ = read_all([tmp_path / "k" / "preferences.jsonl"])
    assert stats["pairs"] == len(pairs) > 3  # more than one pair per prompt
    per_prompt: dict[str, set] = {}
    for pair in pairs:
        answers = per_prompt.setdefault(json.dumps(list(pair.prompt)), set())
        answers |= {pair.chosen, pair.rejected}
    distinct = sum(len(a) for a in per_prompt.values())
    assert len(pairs) == sum(len(a) * (len(a) - 1) // 2 for a in per_prompt.values())
    assert distinct + stats.get("identical", 0) + stats.get("empty_response", 0) == 4 * 3

    assert cli.main([*argv, "--responses", "1", "--out", str(tmp_path / "bad")]) == 1
    assert "--responses 1: must be at least 2" in capsys.readouterr().err


@pytest.mark.parametrize("line, message", [
    ('{"messages": [{"role": "user", "content": "hi"}', "prompts.jsonl:2: not valid JSON"),
    ('{"messages": [{"role": "user", "content": "Tell me a secret nobody asked."}]}', "unknown prompt"),
])
def test_annotate_refuses_a_bad_prompt_file_in_one_line(tmp_path, capsys, line, message):
    """Before any sampling: a malformed line is named with file and line, and a prompt the world did
    not generate (its annotators cannot judge it) is named too."""
    from llamaforge import cli
    from llamaforge.world import World

    good = json.dumps(World(0).prompts("helpful", "test")[0])
    (tmp_path / "prompts.jsonl").write_text(good + "\n" + line + "\n")
    argv = ["annotate", "--policy", str(tmp_path / "never_loaded"), "--prompts", str(tmp_path / "prompts.jsonl"),
            "--out", str(tmp_path / "a")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and message in err, err
