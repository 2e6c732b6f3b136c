"""RLHF (paper §3.2.3): the reward math shared by rejection sampling and PPO."""
