"""`llamaforge generate` (complete a prompt) and `llamaforge chat` (a multi-turn chat in the Llama 2
format, streaming tokens as they are produced)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from llamaforge.checkpoint import load_model_and_tokenizer
from llamaforge.device import DeviceName, resolve_device
from llamaforge.errors import UserError
from llamaforge.generate import Decode, generate
from llamaforge.tokenizer import DialogError, Tokenizer


@dataclass
class SamplingArgs:
    ckpt: Path
    """Checkpoint directory (Hugging Face Llama layout with tokenizer.model)."""
    max_new_tokens: int = 256
    """Most tokens to generate per answer."""
    temperature: float = 0.6
    """Sampling temperature; 0 is greedy. 0.6 and top-p 0.9 are Meta's chat defaults."""
    top_p: float = 0.9
    """Nucleus sampling mass."""
    seed: int = 0
    """Random seed of the sampler."""
    device: DeviceName = "auto"
    """Where to run: cpu, cuda, or auto (cuda if available)."""
    decode: Decode = "auto"
    """Decode path: plain (reference), static, compiled (CUDA graph); auto: compiled on CUDA."""


@dataclass
class GenerateArgs(SamplingArgs):
    """Complete a text prompt (or answer it as a single chat turn with --chat)."""

    prompt: str = ""
    """The text to continue."""
    chat: bool = False
    """Wrap the prompt as one user turn of the Llama 2 chat format."""


@dataclass
class ChatArgs(SamplingArgs):
    """Talk with a chat model in the Llama 2 format. /reset starts over, /exit (or Ctrl-D) quits."""

    system: str | None = None
    """System prompt, merged into the first user turn as Meta's format does."""


class TokenPrinter:
    """Prints a sequence's text as tokens arrive. Decoding the whole continuation each time (not token
    by token) keeps multi-byte characters right; decoding it after the prompt's last token keeps the
    space SentencePiece would drop at the start of a text ("in" + "▁Dupaia" -> "in Dupaia").
    `strip_leading_space` is for chat answers, which Meta's format separates from "[/INST]" by one."""

    def __init__(self, tokenizer: Tokenizer, context_id: int, strip_leading_space: bool = False):
        self.tokenizer, self.ids, self.printed = tokenizer, [context_id], ""
        self.offset = len(tokenizer.decode([context_id]))
        self.strip = strip_leading_space

    def __call__(self, _sequence: int, token: int) -> None:
        if token == self.tokenizer.eos_id:
            return
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)[self.offset :]
        text = text.lstrip(" ") if self.strip else text
        if text.startswith(self.printed):
            sys.stdout.write(text[len(self.printed) :])
            sys.stdout.flush()
            self.printed = text


def _load(args: SamplingArgs):
    model, tokenizer = load_model_and_tokenizer(args.ckpt, device=resolve_device(args.device))
    return model.eval(), tokenizer


def generate_main(args: GenerateArgs) -> str:
    if not args.prompt:
        raise UserError("--prompt: give the text to continue")
    model, tokenizer = _load(args)
    if args.chat:
        ids = tokenizer.encode_dialog_prompt([{"role": "user", "content": args.prompt}])
    else:
        ids = tokenizer.encode(args.prompt, bos=True)
        sys.stdout.write(args.prompt)
    printer = TokenPrinter(tokenizer, ids[-1], strip_leading_space=args.chat)
    generate(model, [ids], args.max_new_tokens, args.temperature, args.top_p, args.seed, tokenizer.eos_id, printer, args.decode)
    print()
    return printer.printed


def chat_main(args: ChatArgs) -> None:
    model, tokenizer = _load(args)
    if args.max_new_tokens >= model.config.max_seq_len:
        raise UserError(f"--max-new-tokens {args.max_new_tokens}: leaves no room for the dialog in the model's "
                        f"{model.config.max_seq_len}-token context")
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages: list[dict] = []
    print(f"chatting with {args.ckpt} ({model.num_parameters() / 1e6:.1f}M parameters); /reset, /exit")
    for turn in range(10**9):
        try:
            user = input("\nyou> ").strip()
        except EOFError:
            print()
            return
        if user in ("/exit", "/quit"):
            return
        if user == "/reset":
            messages = []
            print("(dialog cleared)")
            continue
        if not user:
            continue
        messages.append({"role": "user", "content": user})
        try:
            ids = _fit_context(tokenizer, system, messages, model.config.max_seq_len - args.max_new_tokens)
        except DialogError as err:
            print(f"error: {err}")
            messages.pop()
            continue
        sys.stdout.write("assistant> ")
        printer = TokenPrinter(tokenizer, ids[-1], strip_leading_space=True)
        generate(
            model, [ids], args.max_new_tokens, args.temperature, args.top_p, args.seed + turn, tokenizer.eos_id, printer,
            args.decode,
        )
        print()
        messages.append({"role": "assistant", "content": printer.printed.strip() or "..."})


def _fit_context(tokenizer: Tokenizer, system: list[dict], messages: list[dict], budget: int) -> list[int]:
    """The prompt ids of the dialog, dropping the oldest exchanges until it fits `budget` tokens."""
    while True:
        ids = tokenizer.encode_dialog_prompt(system + messages)
        if len(ids) <= budget:
            return ids
        if len(messages) == 1:
            raise DialogError(f"message 0: {len(ids)} tokens do not fit the {budget}-token prompt budget")
        del messages[:2]

