"""llamaforge: the Llama 2 recipe, end to end, in one small PyTorch codebase."""

from llamaforge.config import ModelConfig
from llamaforge.generate import generate
from llamaforge.model import KVCache, Llama
from llamaforge.tokenizer import Tokenizer

__all__ = ["KVCache", "Llama", "ModelConfig", "Tokenizer", "generate"]
