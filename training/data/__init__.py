"""The training data path: corpus manifest URL -> streams -> sample transforms -> collated batches (see README.md)."""
