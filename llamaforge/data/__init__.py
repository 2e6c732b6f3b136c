"""Data: loading, validation, tokenization, packing and batching of every stage's inputs."""
