"""LoRA adapters (llamaforge/lora.py): frozen base, exact start, merge equals the adapted model, and a
LoRA SFT run that saves a plain Hugging Face checkpoint."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil

import safetensors.torch
import torch

from llamaforge import Llama, ModelConfig
from llamaforge.lora import LoRALinear, add_lora, merge_lora
from llamaforge.losses import next_token_loss
from llamaforge.train.sft import SftArgs, main
from llamaforge.train.state import complete_checkpoints

CONFIG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=400, multiple_of=16, max_seq_len=128)
RANK, ALPHA = 4, 8.0  # scale alpha / rank = 2


def random_tokens(seed: int, shape=(4, 32)) -> torch.Tensor:
    return torch.randint(0, CONFIG.vocab_size, shape, generator=torch.Generator().manual_seed(seed))


def trained_adapter_model() -> tuple[Llama, Llama]:
    """(base, adapted): a random model, and a copy with adapters trained for 5 steps on random data."""
    torch.manual_seed(0)
    base = Llama(CONFIG).eval()
    adapted = add_lora(copy.deepcopy(base), RANK, ALPHA)
    optimizer = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=1e-2)
    for step in range(5):
        tokens = random_tokens(step)
        loss, count = next_token_loss(adapted(tokens[:, :-1]), tokens[:, 1:])
        (loss / count).backward()
        optimizer.step()
        optimizer.zero_grad()
    return base, adapted.eval()


def test_only_adapters_train():
    torch.manual_seed(0)
    model = add_lora(Llama(CONFIG), RANK, ALPHA)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    # 2 layers x 7 projections (wq wk wv wo w1 w2 w3) x (lora_a, lora_b)
    assert len(trainable) == 2 * 7 * 2
    assert all(name.endswith((".lora_a", ".lora_b")) for name in trainable)
    wq = model.layers[0].attention.wq
    assert isinstance(wq, LoRALinear) and wq.lora_a.shape == (RANK, 64) and wq.lora_b.shape == (64, RANK)
    w2 = model.layers[1].feed_forward.w2
    assert w2.lora_a.shape == (RANK, CONFIG.hidden_dim) and w2.lora_b.shape == (64, RANK)
    assert wq.scale == 2.0
    assert not model.tok_embeddings.weight.requires_grad and not model.norm.weight.requires_grad


def test_adapters_start_at_the_base_model():
    torch.manual_seed(0)
    base = Llama(CONFIG).eval()
    adapted = add_lora(copy.deepcopy(base), RANK, ALPHA).eval()
    assert all(m.lora_b.abs().max() == 0 for m in adapted.modules() if isinstance(m, LoRALinear))
    assert all(m.lora_a.abs().max() > 0 for m in adapted.modules() if isinstance(m, LoRALinear))
    tokens = random_tokens(99)
    with torch.no_grad():
        assert torch.equal(adapted(tokens), base(tokens))  # B = 0: the adapter adds exactly nothing


def test_training_changes_the_adapters_only_and_merging_reproduces_the_model():
    base, adapted = trained_adapter_model()
    tokens = random_tokens(99)
    with torch.no_grad():
        base_logits, adapted_logits = base(tokens), adapted(tokens)
    assert (adapted_logits - base_logits).abs().max() > 1e-2  # the adapters learned something
    # The frozen weights did not move.
    for name, tensor in base.state_dict().items():
        assert torch.equal(adapted.state_dict()[name], tensor), name

    merged = merge_lora(adapted.state_dict(), RANK, ALPHA)
    assert not [k for k in merged if "lora" in k]
    assert set(merged) == set(base.state_dict())
    # One weight by hand: W + (alpha / rank) B A.
    wq = adapted.layers[0].attention.wq
    expected = wq.weight + 2.0 * wq.lora_b @ wq.lora_a
    assert torch.allclose(merged["layers.0.attention.wq.weight"], expected, atol=1e-6)
    assert torch.equal(merged["norm.weight"], base.norm.weight)

    plain = Llama(CONFIG).eval()
    plain.load_state_dict(merged)  # strict: exactly a plain Llama's tensors
    with torch.no_grad():
        assert torch.allclose(plain(tokens), adapted_logits, atol=1e-5, rtol=0)


def test_lora_sft_run_saves_a_plain_merged_checkpoint(tmp_path, tokenizer):
    torch.manual_seed(0)
    init_model = Llama(CONFIG)
    init = init_model.save_pretrained(tmp_path / "init", tokenizer_path=tokenizer.path)
    dialog = {
        "messages": [
            {"role": "user", "content": "what is the capital of Varn ?"},
            {"role": "assistant", "content": "the capital of Varn is Orin ."},
        ]
    }
    data = tmp_path / "train.jsonl"
    data.write_text((json.dumps(dialog) + "\n") * 8)
    args = SftArgs(
        init=init, data=[data], out=tmp_path / "run", seq_len=128, batch_size=2, micro_batch_size=2, epochs=1,
        max_steps=4, lr=1e-2, warmup_steps=1, log_every=1, eval_every=0, save_every=2, lora_rank=4, lora_alpha=8.0,
        device="cpu",
    )
    out = main(args)

    # Intermediate checkpoints keep the adapters (for resuming); the final model has them merged.
    checkpoints = complete_checkpoints(out)
    assert [c.name for c in checkpoints] == ["step-00000002", "step-00000004"]
    assert any("lora" in k for k in safetensors.torch.load_file(checkpoints[-1] / "model.safetensors"))
    saved = safetensors.torch.load_file(out / "model" / "model.safetensors")
    assert not [k for k in saved if "lora" in k]
    assert len(saved) == len(init_model.state_dict())

    tuned = Llama.from_pretrained(out / "model")
    changed = {
        name for name, tensor in tuned.state_dict().items() if not torch.equal(tensor, init_model.state_dict()[name])
    }
    # The adapted projections moved; embeddings, norms and the output layer are frozen under LoRA.
    assert "layers.0.attention.wq.weight" in changed and "layers.1.feed_forward.w2.weight" in changed
    assert not changed & {"tok_embeddings.weight", "output.weight", "norm.weight", "layers.0.attention_norm.weight"}
    assert all(name.endswith(("wq.weight", "wk.weight", "wv.weight", "wo.weight", "w1.weight", "w2.weight", "w3.weight")) for name in changed)

    # Resuming from the step-2 checkpoint (adapters unmerged in it) ends at the same merged model.
    resumed_out = tmp_path / "resumed"
    shutil.copytree(out, resumed_out)
    shutil.rmtree(resumed_out / "checkpoints" / "step-00000004")
    shutil.rmtree(resumed_out / "model")
    (resumed_out / "summary.json").unlink()
    main(dataclasses.replace(args, out=resumed_out))
    resumed = safetensors.torch.load_file(resumed_out / "model" / "model.safetensors")
    assert set(resumed) == set(saved)
    for name, tensor in saved.items():
        assert torch.allclose(resumed[name], tensor, atol=1e-6, rtol=0), name
