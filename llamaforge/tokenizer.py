"""The Llama 2 tokenizer (SentencePiece BPE) and the Llama 2 chat format (paper §2.2; Meta's chat_completion).

`Tokenizer` loads any Llama 2 `tokenizer.model` or one trained by `train_tokenizer`, which trains
like Llama 2's: BPE, digits split into single tokens, byte fallback for unknown UTF-8, unk 0,
BOS 1, EOS 2. The chat format reproduces Meta's `chat_completion` token for token.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from llamaforge.data.text import read_documents
from llamaforge.errors import UserError
from llamaforge.flags import RequiredPaths

# Meta's chat format constants (llama/generation.py).
B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
SPECIAL_TAGS = (B_INST, E_INST, "<<SYS>>", "<</SYS>>")

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}


class DialogError(ValueError):
    """A dialog that breaks the chat format's rules; the message names the offending message index."""


class Tokenizer:
    def __init__(self, path: str | Path):
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.model"
        if not path.is_file():
            raise UserError(f"{path}: tokenizer file not found")
        self.path = path
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError) as err:
            raise UserError(f"{path}: not a SentencePiece model ({err})") from None
        self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()
        if self.bos_id < 0 or self.eos_id < 0:
            raise UserError(f"{path}: the tokenizer defines no BOS or EOS token")

    @property
    def vocab_size(self) -> int:
        return self.sp.vocab_size()

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        return [self.bos_id] * bos + self.sp.encode(text) + [self.eos_id] * eos

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode(list(ids))

    def encode_dialog(self, messages: list[Message]) -> tuple[list[int], list[bool]]:
        """Token ids of a complete dialog (ending on an assistant turn) and its assistant mask.

        The mask is True on each assistant answer's tokens and its EOS: what SFT trains on (paper
        §3.1); the user side (BOS, tags, system prompt, user text) is False.
        """
        turns = _merge_system(validate_dialog(messages, ends_with="assistant"))
        ids: list[int] = []
        mask: list[bool] = []
        for user, answer in zip(turns[::2], turns[1::2]):
            prompt = self.encode(f"{B_INST} {user.strip()} {E_INST}", bos=True)
            exchange = self.encode(f"{B_INST} {user.strip()} {E_INST} {answer.strip()} ", bos=True, eos=True)
            answer_start = _common_prefix_length(prompt, exchange)
            ids += exchange
            mask += [False] * answer_start + [True] * (len(exchange) - answer_start)
        return ids, mask

    def encode_dialog_prompt(self, messages: list[Message]) -> list[int]:
        """Token ids of a dialog ending on a user turn, ready for the model to answer."""
        turns = _merge_system(validate_dialog(messages, ends_with="user"))
        ids: list[int] = []
        for user, answer in zip(turns[:-1:2], turns[1::2]):
            ids += self.encode(f"{B_INST} {user.strip()} {E_INST} {answer.strip()} ", bos=True, eos=True)
        return ids + self.encode(f"{B_INST} {turns[-1].strip()} {E_INST}", bos=True)


def validate_dialog(messages: list[Message], ends_with: str) -> list[Message]:
    """Check a dialog against the chat format's rules; raise DialogError naming the message index."""
    if not isinstance(messages, list) or not messages:
        raise DialogError("a dialog must be a non-empty list of messages")
    odd = next((i for i, m in enumerate(messages) if not isinstance(m, dict)), None)
    if odd is not None:
        raise DialogError(f"message {odd}: expected an object with 'role' and 'content'")
    first_user = 1 if messages[0].get("role") == "system" else 0
    if first_user == len(messages):
        raise DialogError("message 0: a dialog cannot hold only a system message")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise DialogError(f"message {i}: expected exactly the keys 'role' and 'content'")
        role, content = message["role"], message["content"]
        expected = "system" if i < first_user else ("user", "assistant")[(i - first_user) % 2]
        if role != expected:
            raise DialogError(f"message {i}: role is {role!r}, expected {expected!r} (roles must alternate user, assistant, ...)")
        if not isinstance(content, str) or not content.strip():
            raise DialogError(f"message {i}: content is empty")
        tag = next((t for t in SPECIAL_TAGS if t in content), None)
        if tag is not None:
            raise DialogError(f"message {i}: special tag {tag!r} is not allowed in content")
    if messages[-1]["role"] != ends_with:
        raise DialogError(
            f"message {len(messages) - 1}: the dialog ends with a {messages[-1]['role']!r} turn, expected {ends_with!r}"
        )
    return messages


def _merge_system(messages: list[Message]) -> list[str]:
    """The contents of the alternating user/assistant turns, a system prompt merged into the first."""
    if messages[0]["role"] != "system":
        return [m["content"] for m in messages]
    first_user = B_SYS + messages[0]["content"] + E_SYS + messages[1]["content"]
    return [first_user] + [m["content"] for m in messages[2:]]


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    # The prompt's tokens are a prefix of the exchange's (SentencePiece pieces start at a word
    # boundary); if a merge ever crossed the boundary, the crossing token counts as answer.
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# --- training --------------------------------------------------------------------------------------


def train_tokenizer(
    documents: Iterable[str], vocab_size: int, out_dir: str | Path, max_sentences: int = 2_000_000
) -> Path:
    """Train a Llama-2-style SentencePiece BPE model; write `out_dir/tokenizer.model`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seen = {"lines": 0, "chars": 0, "error": None}

    def lines() -> Iterator[str]:  # streamed: SentencePiece samples max_sentences of them
        try:
            for doc in documents:
                for line in doc.split("\n"):
                    if line.strip():
                        seen["lines"] += 1
                        seen["chars"] += len(line)
                        yield line
        except UserError as err:  # SentencePiece would wrap it in its own error: keep it for later
            seen["error"] = err

    print(f"training a {vocab_size}-token BPE tokenizer...", flush=True)
    started = time.time()
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines(),
            model_writer=model,
            model_type="bpe",
            vocab_size=vocab_size,
            split_digits=True,  # numbers become single digits (paper §2.2)
            byte_fallback=True,  # unknown UTF-8 decomposes into byte tokens, never <unk>
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            character_coverage=0.99995,
            normalization_rule_name="identity",  # text is not rewritten (no NFKC), as in Llama 2
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            max_sentence_length=1 << 15,
            num_threads=2,
            minloglevel=2,
        )
    except RuntimeError as err:
        if seen["error"] is not None:
            raise seen["error"] from None
        if seen["lines"] == 0:
            raise UserError("tokenizer training: the input holds no text") from None
        raise UserError(f"tokenizer training failed: {err}") from None
    if seen["error"] is not None:
        raise seen["error"]
    path = out_dir / "tokenizer.model"
    path.write_bytes(model.getvalue())
    print(
        f"wrote {path}: {vocab_size} tokens from {seen['lines']:,} lines ({seen['chars'] / 1e6:.1f} MB of text) "
        f"in {time.time() - started:.1f}s",
        flush=True,
    )
    return path


@dataclass
class TokenizerTrainArgs:
    """Train a Llama-2-style SentencePiece BPE tokenizer."""

    input: RequiredPaths
    """Text files (one document per line), JSONL files with a "text" field, or (with `datasets`
    installed) Parquet files and Hub dataset names."""
    out: Path
    """Directory to write tokenizer.model into."""
    vocab_size: int = 32000
    """Vocabulary size (Llama 2: 32000; the tiny preset: 4096)."""


def train_main(args: TokenizerTrainArgs) -> Path:
    return train_tokenizer(read_documents(args.input), args.vocab_size, args.out)
