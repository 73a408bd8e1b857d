"""Sample data built through the real pipelines and models: small corpora, VL datasets, tiny checkpoints."""
