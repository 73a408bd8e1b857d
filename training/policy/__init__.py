"""Deployment: the inference policy (with the loader's normalization) and synchronous/asynchronous execution."""
