"""Peak memory of the output-layer loss, forward + backward: full logits vs llamaforge's chunked loss.

    python bench/loss_memory.py plain
    python bench/loss_memory.py chunked

Run each mode in its own process: the number is the increase of the process's peak resident
memory (getrusage) over what it held before the loss, for 8,192 tokens, a 32,000-token vocabulary
and dim 256, fp32.
"""

import resource
import sys

import torch

from llamaforge.losses import chunked_next_token_loss, next_token_loss


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode not in ("plain", "chunked"):
        sys.exit("usage: python bench/loss_memory.py plain|chunked")
    torch.manual_seed(0)
    tokens, dim, vocab = 8192, 256, 32000
    hidden = torch.randn(1, tokens, dim, requires_grad=True)
    weight = (torch.randn(vocab, dim) * 0.02).requires_grad_()
    targets = torch.randint(0, vocab, (1, tokens))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "plain":
        total, count = next_token_loss(hidden @ weight.T, targets)
    else:
        total, count = chunked_next_token_loss(hidden, weight, targets)
    total.backward()
    extra_gib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20  # ru_maxrss is in KiB
    print(f"{mode}: loss/token {float(total.detach() / count):.6f}, peak extra memory {extra_gib:.2f} GiB")


if __name__ == "__main__":
    main()
