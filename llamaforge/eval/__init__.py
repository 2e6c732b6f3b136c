"""Evaluation of chat models and reward models, measured with judges passed in by the caller."""
