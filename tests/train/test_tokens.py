"""Pretraining tokens (llamaforge/data/tokens.py) and the per-process micro-batches of a step."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from llamaforge.data.tokens import PackedSequences, load_tokens, tokenize_documents
from llamaforge.errors import UserError
from llamaforge.train.distributed import Distributed
from llamaforge.train.pretrain import step_micro_batches

DOCUMENTS = [
    "the capital of Varn is Orin .",
    "what is the sum of 3 and 4 ?",
    "people speak the language of Telsa",
    "the river and the mountain of Mirak",
    "please tell me about Quell",
    "who is the city of 7 ?",
    "how many people speak 2 or 5 ?",
    "lock the seal and brew a tonic !",
    "kill the process that is stuck",
    "answer the question , please",
]


def split_documents(stream: np.ndarray, bos: int) -> list[list[int]]:
    """A token stream cut before every BOS."""
    starts = [i for i, t in enumerate(stream.tolist()) if t == bos] + [len(stream)]
    assert starts[0] == 0, "the stream starts with BOS"
    return [stream[a:b].tolist() for a, b in zip(starts, starts[1:])]


def tokenize(tokenizer, out, seed=0, val_fraction=0.3, documents=DOCUMENTS):
    info = tokenize_documents(documents, tokenizer, out, val_fraction, seed, ["hand-written"])
    return info, load_tokens(out, "train"), load_tokens(out, "val")


def test_every_document_once_whole_with_bos_and_eos(tokenizer, tmp_path):
    info, train, val = tokenize(tokenizer, tmp_path / "tokens", documents=DOCUMENTS + ["   ", ""])
    assert train.dtype == np.uint16 and val.dtype == np.uint16  # a 400-token vocabulary
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    train_docs, val_docs = split_documents(train, bos), split_documents(val, bos)
    # round(0.3 * 10) = 3 validation documents; the two blank documents are dropped.
    assert (len(train_docs), len(val_docs)) == (7, 3)
    assert info["documents"] == {"train": 7, "val": 3}
    assert info["tokens"] == {"train": len(train), "val": len(val)}
    assert info["dtype"] == "uint16" and info["seed"] == 0 and info["val_fraction"] == 0.3
    assert json.loads((tmp_path / "tokens" / "tokens.json").read_text()) == info

    decoded = []
    for ids in train_docs + val_docs:
        assert ids[0] == bos and ids[-1] == eos  # [BOS] doc [EOS]
        assert bos not in ids[1:] and eos not in ids[:-1]
        text = tokenizer.decode(ids[1:-1])
        assert ids == tokenizer.encode(text, bos=True, eos=True)
        decoded.append(text)
    # Each document in exactly one split, whole (a split document would not decode to a document).
    assert sorted(decoded) == sorted(DOCUMENTS)
    assert set(tokenizer.decode(d[1:-1]) for d in val_docs).isdisjoint(tokenizer.decode(d[1:-1]) for d in train_docs)


def test_split_and_order_depend_only_on_the_seed(tokenizer, tmp_path):
    _, train_a, val_a = tokenize(tokenizer, tmp_path / "a", seed=0)
    _, train_b, val_b = tokenize(tokenizer, tmp_path / "b", seed=0)
    _, train_c, val_c = tokenize(tokenizer, tmp_path / "c", seed=1)
    assert np.array_equal(train_a, train_b) and np.array_equal(val_a, val_b)
    order = lambda stream: [tokenizer.decode(d[1:-1]) for d in split_documents(stream, tokenizer.bos_id)]  # noqa: E731
    assert order(train_a) + order(val_a) != order(train_c) + order(val_c)
    assert sorted(order(train_c) + order(val_c)) == sorted(DOCUMENTS)


def test_no_validation_and_too_few_documents(tokenizer, tmp_path):
    info, train, val = tokenize(tokenizer, tmp_path / "none", val_fraction=0.0)
    assert info["documents"] == {"train": 10, "val": 0} and len(val) == 0 and val.dtype == np.uint16
    assert (tmp_path / "none" / "val.bin").stat().st_size == 0
    # A tiny fraction still holds out one document, and never all of them.
    assert tokenize(tokenizer, tmp_path / "one", val_fraction=0.001)[0]["documents"] == {"train": 9, "val": 1}
    assert tokenize(tokenizer, tmp_path / "max", val_fraction=1.0)[0]["documents"] == {"train": 1, "val": 9}
    with pytest.raises(UserError, match="at least 2 non-empty documents"):
        tokenize(tokenizer, tmp_path / "few", documents=["only one", " "])


# --- packed sequences ------------------------------------------------------------------------------

SEQ_LEN = 4
STREAM = np.arange(403, dtype=np.uint16)  # (403 - 1) // 4 = 100 windows of 5 tokens


def test_windows_overlap_by_one_token():
    seqs = PackedSequences(STREAM, SEQ_LEN, seed=0)
    assert len(seqs) == 100
    windows = sorted((seqs.window(n) for n in range(100)), key=lambda w: int(w[0]))
    for k, w in enumerate(windows):
        assert w.dtype == torch.int64 and w.shape == (SEQ_LEN + 1,)
        assert w.tolist() == list(range(4 * k, 4 * k + 5))  # window k: tokens 4k .. 4k+4
    for a, b in zip(windows, windows[1:]):
        assert int(a[-1]) == int(b[0])  # the last token of one is the first of the next
    assert int(windows[-1][-1]) == 400  # tokens 401 and 402 do not fill a window


def epoch_starts(seqs, epoch):
    return [int(seqs.window(epoch * len(seqs) + i)[0]) // SEQ_LEN for i in range(len(seqs))]


def test_order_is_a_permutation_reshuffled_each_epoch():
    seqs = PackedSequences(STREAM, SEQ_LEN, seed=0)
    e0, e1, e2 = epoch_starts(seqs, 0), epoch_starts(seqs, 1), epoch_starts(seqs, 2)
    for order in (e0, e1, e2):
        assert sorted(order) == list(range(100))  # every window once per epoch
    assert e0 != list(range(100))  # shuffled
    assert e0 != e1 and e1 != e2  # reshuffled every epoch
    # Sequence numbers far past the first epoch keep going, a pure function of (seed, n).
    fresh = PackedSequences(STREAM, SEQ_LEN, seed=0)
    assert torch.equal(fresh.window(1234), seqs.window(1234))
    assert torch.equal(fresh.window(7), seqs.window(7))  # back to epoch 0 after epoch 12
    assert int(seqs.window(1234)[0]) // SEQ_LEN == epoch_starts(seqs, 12)[34]
    assert epoch_starts(PackedSequences(STREAM, SEQ_LEN, seed=1), 0) != e0
    batch = seqs.batch([3, 150, 3])
    assert batch.shape == (3, 5) and torch.equal(batch[0], batch[2]) and torch.equal(batch[1], seqs.window(150))


def test_too_short_stream():
    with pytest.raises(UserError, match="fewer than one sequence"):
        PackedSequences(np.arange(4, dtype=np.uint16), 4, seed=0)
    assert len(PackedSequences(np.arange(5, dtype=np.uint16), 4, seed=0)) == 1


@pytest.mark.parametrize("step", [0, 12])  # sequences 96..103: step 12 crosses into the second epoch
def test_step_split_between_two_processes(step):
    seqs = PackedSequences(STREAM, SEQ_LEN, seed=0)
    batch = 8

    def rows(env, micro):
        batches = step_micro_batches(seqs, step * batch, batch, micro, env)
        for b in batches:
            assert torch.equal(b["inputs"][:, 1:], b["targets"][:, :-1])  # targets shifted by one
            assert b["count"] == b["targets"].numel()
            assert b["tokens"] == b["inputs"].numel()  # every position of the packed input: all predicted
        windows = [torch.cat([b["inputs"], b["targets"][:, -1:]], dim=1) for b in batches]  # (B, seq_len + 1)
        return [tuple(row.tolist()) for w in windows for row in w], batches

    single, single_batches = rows(Distributed(), 2)
    assert len(single_batches) == 4 and len(single) == 8
    assert single == [tuple(seqs.window(n).tolist()) for n in range(step * batch, (step + 1) * batch)]
    rank0, b0 = rows(Distributed(rank=0, world_size=2), 2)
    rank1, b1 = rows(Distributed(rank=1, world_size=2), 2)
    assert len(rank0) == len(rank1) == 4 and len(b0) == len(b1) == 2
    # Together the two processes hold exactly the step's sequences, each once.
    assert Counter(rank0) + Counter(rank1) == Counter(single)
    if step == 0:  # within one epoch all windows differ: no sequence on both processes
        assert set(rank0).isdisjoint(rank1)
    assert sum(b["count"] for b in b0 + b1) == sum(b["count"] for b in single_batches) == 8 * SEQ_LEN
