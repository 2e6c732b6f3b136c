"""Training: the shared mechanics (loop.py, optim.py, state.py, distributed.py) and one file per stage."""
