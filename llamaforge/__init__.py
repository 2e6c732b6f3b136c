"""llamaforge: the Llama 2 recipe, end to end, in one small PyTorch codebase."""
