import random

import pytest

from llamaforge.tokenizer import Tokenizer, train_tokenizer

WORDS = (
    "the a capital of is city river mountain people speak language kill process stuck brew tonic "
    "lock seal answer question what who where how many sum of and or not please tell me about "
    "Varn Orin Telsa Mirak Quell 0 1 2 3 4 5 6 7 8 9 . , ? !"
).split()


def random_documents(n: int = 2000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) for _ in range(n)]


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory) -> Tokenizer:
    """A 400-token BPE tokenizer trained like Llama 2's on random sentences of a small word list."""
    return Tokenizer(train_tokenizer(random_documents(), 400, tmp_path_factory.mktemp("tokenizer")))
