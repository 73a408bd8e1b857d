"""The shard format: writing, committing, listing, opening by URL and reading back our WebDataset shards."""
