"""Checkpoint directories: sharding, .bin loading, refusing pickled code, atomic saves, bad inputs,
config.json round trips and tied embeddings. (Logit parity with transformers: tests/test_hf_parity.py.)"""

import dataclasses
import json
import pickle
import random
from pathlib import Path

import pytest
import safetensors.torch
import torch

import llamaforge.checkpoint as checkpoint
from llamaforge.checkpoint import config_from_hf, config_to_hf, load_model_and_tokenizer
from llamaforge.config import MODEL_PRESETS, ModelConfig
from llamaforge.convert import load_meta
from llamaforge.errors import UserError
from llamaforge.model import Llama, RewardModel
from llamaforge.tokenizer import train_tokenizer

CONFIG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, multiple_of=32, max_seq_len=128)


def random_model(seed: int = 0, config: ModelConfig = CONFIG) -> Llama:
    torch.manual_seed(seed)
    model = Llama(config)
    with torch.no_grad():  # norms are ones at init; make them differ so a mix-up shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model


def assert_same_weights(model: Llama, expected: Llama) -> None:
    got, want = model.state_dict(), expected.state_dict()
    assert sorted(got) == sorted(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name


def saved(tmp_path: Path, seed: int = 0) -> tuple[Path, Llama]:
    model = random_model(seed)
    return model.save_pretrained(tmp_path / "ckpt"), model


def edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def edit_tensors(directory: Path, edit) -> None:
    path = directory / "model.safetensors"
    tensors = safetensors.torch.load_file(path)
    edit(tensors)
    safetensors.torch.save_file(tensors, path)


def load_error(directory: Path) -> str:
    with pytest.raises(UserError) as err:
        Llama.from_pretrained(directory)
    return str(err.value)


# --- saving and loading ----------------------------------------------------------------------------


def test_save_writes_hf_layout_and_reloads_identically(tmp_path):
    directory, model = saved(tmp_path)
    assert sorted(p.name for p in directory.iterdir()) == [
        "config.json", "generation_config.json", "llamaforge.json", "model.safetensors"
    ]
    hf = json.loads((directory / "config.json").read_text())
    assert (hf["hidden_size"], hf["intermediate_size"], hf["num_key_value_heads"], hf["vocab_size"]) == (64, 192, 2, 300)
    names = safetensors.torch.load_file(directory / "model.safetensors").keys()
    assert len(names) == 2 + 2 * 9 + 1  # embedding, lm_head, 9 per layer, final norm
    assert "model.layers.1.self_attn.k_proj.weight" in names
    assert json.loads((directory / "llamaforge.json").read_text())["model_config"] == dataclasses.asdict(CONFIG)
    assert_same_weights(Llama.from_pretrained(directory), model)


def test_sharded_save_writes_index_and_reloads_identically(tmp_path, monkeypatch):
    # Each layer holds ~74 kB of fp32 weights, the embedding and lm_head 76.8 kB each.
    monkeypatch.setattr(checkpoint, "MAX_SHARD_BYTES", 100_000)
    directory, model = saved(tmp_path)
    shards = sorted(p.name for p in directory.glob("*.safetensors"))
    count = len(shards)
    assert count >= 3
    assert shards == [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    assert not (directory / "model.safetensors").exists()

    index = json.loads((directory / "model.safetensors.index.json").read_text())
    state = model.state_dict()
    assert sorted(index["weight_map"]) == sorted(checkpoint.hf_name(k) for k in state)
    assert set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in state.values())
    for shard in shards:  # every shard holds exactly what the index says, within the size limit
        tensors = safetensors.torch.load_file(directory / shard)
        assert sorted(tensors) == sorted(k for k, v in index["weight_map"].items() if v == shard)
        assert len(tensors) == 1 or sum(t.numel() * 4 for t in tensors.values()) <= 100_000

    assert_same_weights(Llama.from_pretrained(directory), model)


def test_missing_shard_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "MAX_SHARD_BYTES", 100_000)
    directory, _ = saved(tmp_path)
    shard = sorted(directory.glob("model-*.safetensors"))[1]
    shard.unlink()
    assert str(shard) in load_error(directory)


def test_weights_only_bin_loads(tmp_path):
    model = random_model(1)
    directory = tmp_path / "bin"
    directory.mkdir()
    torch.save(
        {checkpoint.hf_name(k): v for k, v in model.state_dict().items()}, directory / "pytorch_model.bin"
    )
    (directory / "config.json").write_text(json.dumps(config_to_hf(CONFIG, torch.float32)))
    assert_same_weights(Llama.from_pretrained(directory), model)


@pytest.mark.parametrize("damage", ["truncated", "bad utf-8 in a name"])
def test_corrupt_bin_names_the_file(tmp_path, damage):
    directory, model = saved(tmp_path)
    (directory / "model.safetensors").unlink()
    weights = directory / "pytorch_model.bin"
    torch.save({checkpoint.hf_name(k): v for k, v in model.state_dict().items()}, weights)
    data = bytearray(weights.read_bytes())
    if damage == "truncated":
        del data[len(data) // 2 :]
    else:  # the pickled key strings are stored uncompressed; 0xff never starts a UTF-8 character
        data[data.find(b"model.norm.weight")] = 0xFF
    weights.write_bytes(bytes(data))
    assert f"{weights}: refused to load" in load_error(directory)


# --- refusing to run code hidden in pickles --------------------------------------------------------


class WritesMarker:
    """Unpickling this object calls open(marker, "w"): it creates a file, proving code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def write_malicious(path: Path, marker: Path, how: str) -> None:
    payload = {"model.embed_tokens.weight": torch.zeros(3, 2), "extra": WritesMarker(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        with path.open("wb") as f:
            pickle.dump(payload, f)


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_malicious_bin_is_refused_without_running_it(tmp_path, how):
    directory, _ = saved(tmp_path)
    (directory / "model.safetensors").unlink()
    weights, marker = directory / "pytorch_model.bin", tmp_path / "pwned"
    write_malicious(weights, marker, how)

    message = load_error(directory)
    assert str(weights) in message and "refused to load" in message
    assert not marker.exists()

    # The payload is live: an unsafe load does run it.
    with weights.open("rb") as f:
        pickle.load(f) if how == "pickle.dump" else torch.load(f, weights_only=False)
    assert marker.exists()


def test_malicious_meta_shard_is_refused_without_running_it(tmp_path):
    src = tmp_path / "meta"
    src.mkdir()
    (src / "params.json").write_text(json.dumps({"dim": 64, "n_layers": 2, "n_heads": 4, "vocab_size": -1}))
    shard, marker = src / "consolidated.00.pth", tmp_path / "pwned"
    write_malicious(shard, marker, "torch.save")
    with pytest.raises(UserError, match="refused to load") as err:
        load_meta(src)
    assert str(shard) in str(err.value)
    assert not marker.exists()


# --- atomic saves ----------------------------------------------------------------------------------


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    directory, first = saved(tmp_path, seed=0)
    real_write_json, calls = checkpoint._write_json, []

    def crash_on_second_json(path, obj):  # model.safetensors and config.json are written by then
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError("disk full")
        real_write_json(path, obj)

    monkeypatch.setattr(checkpoint, "_write_json", crash_on_second_json)
    with pytest.raises(OSError, match="disk full"):
        random_model(seed=1).save_pretrained(directory)
    assert calls == ["config.json", "generation_config.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary directory left behind
    assert_same_weights(Llama.from_pretrained(directory), first)

    monkeypatch.setattr(checkpoint, "_write_json", real_write_json)
    second = random_model(seed=1)
    second.save_pretrained(directory)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert_same_weights(Llama.from_pretrained(directory), second)
    assert not torch.equal(first.output.weight, second.output.weight)


def test_failed_swap_restores_previous_checkpoint(tmp_path, monkeypatch):
    # The swap renames the old directory aside, then the new one in; if the second rename fails,
    # the old one must come back under its name.
    directory, first = saved(tmp_path, seed=0)
    real_rename = Path.rename

    def rename(self, target):
        if ".ckpt.tmp-" in self.name:
            raise OSError("rename failed")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        random_model(seed=1).save_pretrained(directory)
    monkeypatch.setattr(Path, "rename", real_rename)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert_same_weights(Llama.from_pretrained(directory), first)


# --- bad inputs: each a UserError naming the file --------------------------------------------------


def test_missing_directory(tmp_path):
    assert str(tmp_path / "nope") in load_error(tmp_path / "nope")


def test_missing_config_json(tmp_path):
    directory, _ = saved(tmp_path)
    (directory / "config.json").unlink()
    assert f"{directory / 'config.json'}: file not found" in load_error(directory)


def test_config_json_that_is_not_json(tmp_path):
    directory, _ = saved(tmp_path)
    (directory / "config.json").write_text('{"hidden_size": 64,')
    assert f"{directory / 'config.json'}: not valid JSON" in load_error(directory)


def test_no_weight_files(tmp_path):
    directory, _ = saved(tmp_path)
    (directory / "model.safetensors").unlink()
    assert str(directory) in load_error(directory)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_safetensors(tmp_path, damage):
    directory, _ = saved(tmp_path)
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x07" * 1000)
    assert f"{weights}: corrupt safetensors file" in load_error(directory)


@pytest.mark.parametrize(
    "changes, shapes",
    [
        ({"intermediate_size": 256}, ("192", "256")),  # FFN weights (192, 64) vs (256, 64)
        ({"vocab_size": 320}, ("300", "320")),  # embedding and lm_head
        ({"num_key_value_heads": 4}, ("(32, 64)", "(64, 64)")),  # k_proj, v_proj
        ({"hidden_size": 128, "head_dim": 32}, ("64", "128")),
    ],
)
def test_tensor_shape_that_does_not_match_config(tmp_path, changes, shapes):
    directory, _ = saved(tmp_path)
    edit_config(directory, **changes)
    message = load_error(directory)
    assert str(directory / "model.safetensors") in message and "config.json implies" in message
    assert all(s in message for s in shapes), message


def test_unexpected_tensor_name(tmp_path):
    directory, _ = saved(tmp_path)
    edit_tensors(directory, lambda t: t.update({"model.vision_tower.weight": torch.zeros(2)}))
    message = load_error(directory)
    assert str(directory / "model.safetensors") in message and "'model.vision_tower.weight'" in message


def test_layer_beyond_config(tmp_path):
    directory, _ = saved(tmp_path)
    edit_config(directory, num_hidden_layers=1)
    message = load_error(directory)
    assert "model.layers.1." in message and "1 layers" in message


def test_missing_tensor(tmp_path):
    directory, _ = saved(tmp_path)
    edit_tensors(directory, lambda t: t.pop("model.layers.1.mlp.down_proj.weight"))
    message = load_error(directory)
    assert str(directory) in message and "'model.layers.1.mlp.down_proj.weight'" in message


def tiny_tokenizer(out: Path, vocab_size: int) -> Path:
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8))) for _ in range(200)]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 15))) for _ in range(400)]
    return train_tokenizer(docs, vocab_size, out)


def test_tokenizer_vocab_must_match_model(tmp_path):
    model = random_model()
    good = model.save_pretrained(tmp_path / "good", tokenizer_path=tiny_tokenizer(tmp_path / "t300", 300))
    loaded, tokenizer = load_model_and_tokenizer(good)
    assert tokenizer.vocab_size == loaded.config.vocab_size == 300

    bad = model.save_pretrained(tmp_path / "bad", tokenizer_path=tiny_tokenizer(tmp_path / "t320", 320))
    with pytest.raises(UserError) as err:
        load_model_and_tokenizer(bad)
    assert str(bad / "tokenizer.model") in str(err.value)
    assert "320" in str(err.value) and "300" in str(err.value)


@pytest.mark.parametrize("fast", [True, False])
def test_sampling_loads_bf16_weights_only_where_bf16_is_fast(tmp_path, monkeypatch, fast):
    model = random_model()
    directory = model.save_pretrained(tmp_path / "ckpt", tokenizer_path=tiny_tokenizer(tmp_path / "t300", 300))
    monkeypatch.setattr(checkpoint, "bf16_is_fast", lambda device: fast)
    loaded, _ = checkpoint.load_for_sampling(directory)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16 if fast else torch.float32}
    weight = loaded.tok_embeddings.weight
    assert torch.equal(weight, model.tok_embeddings.weight.to(weight.dtype))  # the same weights, rounded


@pytest.mark.parametrize("fast", [True, False])
def test_scoring_loads_a_bf16_reward_model_only_where_bf16_is_fast(tmp_path, monkeypatch, fast):
    torch.manual_seed(0)
    state = RewardModel(CONFIG).state_dict()
    directory = checkpoint.save_reward_state(state, CONFIG, tmp_path / "rm", tiny_tokenizer(tmp_path / "t300", 300))
    monkeypatch.setattr(checkpoint, "bf16_is_fast", lambda device: fast)
    rm, tokenizer = checkpoint.load_for_scoring(directory)
    assert {p.dtype for p in rm.parameters()} == {torch.bfloat16 if fast else torch.float32}
    assert tokenizer.vocab_size == 300
    assert torch.equal(rm.head.weight, state["head.weight"].to(rm.head.weight.dtype))  # the same head, rounded


def test_missing_tokenizer_is_named(tmp_path):
    directory, _ = saved(tmp_path)
    with pytest.raises(UserError, match="tokenizer file not found") as err:
        load_model_and_tokenizer(directory)
    assert str(directory / "tokenizer.model") in str(err.value)


# --- config.json -----------------------------------------------------------------------------------


def same_shape(a: ModelConfig, b: ModelConfig) -> bool:
    """Equal as models: the FFN size may be expressed with other multiple_of/multiplier values, and
    n_kv_heads None means n_kv_heads == n_heads."""
    fields = ("dim", "n_layers", "n_heads", "kv_heads", "vocab_size", "hidden_dim", "norm_eps", "rope_theta", "max_seq_len")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


@pytest.mark.parametrize("preset", sorted(MODEL_PRESETS))
def test_config_round_trip_for_presets(preset):
    config = MODEL_PRESETS[preset]()
    hf = config_to_hf(config, torch.bfloat16)
    assert hf["intermediate_size"] == config.hidden_dim
    back = config_from_hf(hf, Path("config.json"))
    assert same_shape(back, config), (back, config)


def test_preset_hidden_sizes_match_meta():
    # Meta's released shapes: 7B 11008, 13B 13824, 70B 28672 (34B as Code Llama: 22016).
    sizes = {name: MODEL_PRESETS[name]().hidden_dim for name in ("llama2_7b", "llama2_13b", "llama2_34b", "llama2_70b")}
    assert sizes == {"llama2_7b": 11008, "llama2_13b": 13824, "llama2_34b": 22016, "llama2_70b": 28672}


@pytest.mark.parametrize("intermediate_size", [100, 170, 171, 192, 200, 1000])
def test_arbitrary_intermediate_size(intermediate_size):
    # For dim 64, Meta's formula gives int(8 * 64 / 3) = 170 before rounding; 100 is below that.
    hf = {**config_to_hf(CONFIG, torch.float32), "intermediate_size": intermediate_size}
    config = config_from_hf(hf, Path("config.json"))
    assert config.hidden_dim == intermediate_size
    assert Llama(config).layers[0].feed_forward.w1.weight.shape == (intermediate_size, 64)


def test_config_with_unsupported_features_is_refused():
    base = config_to_hf(CONFIG, torch.float32)
    for changes, field in [
        ({"model_type": "mistral"}, "model_type"),
        ({"attention_bias": True}, "attention_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope scaling"),
        ({"head_dim": 8}, "head_dim"),
    ]:
        with pytest.raises(UserError, match=field):
            config_from_hf({**base, **changes}, Path("x/config.json"))
    without_vocab = {k: v for k, v in base.items() if k != "vocab_size"}
    with pytest.raises(UserError, match="x/config.json: missing field 'vocab_size'"):
        config_from_hf(without_vocab, Path("x/config.json"))


# --- tied embeddings -------------------------------------------------------------------------------


def test_checkpoint_without_lm_head_ties_output_to_embedding(tmp_path):
    directory, model = saved(tmp_path)
    edit_tensors(directory, lambda t: t.pop("lm_head.weight"))
    edit_config(directory, tie_word_embeddings=True)
    loaded = Llama.from_pretrained(directory)
    assert torch.equal(loaded.output.weight, model.tok_embeddings.weight)
    assert torch.equal(loaded.tok_embeddings.weight, model.tok_embeddings.weight)
    tokens = torch.tensor([[1, 5, 9, 299]])
    with torch.no_grad():
        expected = loaded.hidden_states(tokens) @ model.tok_embeddings.weight.T
        assert torch.allclose(loaded(tokens), expected, atol=1e-5)


def test_missing_lm_head_without_tied_embeddings_is_an_error(tmp_path):
    directory, _ = saved(tmp_path)
    edit_tensors(directory, lambda t: t.pop("lm_head.weight"))  # config.json says untied
    with pytest.raises(UserError, match="missing tensor 'lm_head.weight'"):
        Llama.from_pretrained(directory)
