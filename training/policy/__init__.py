"""Deployment: normalization by embodiment, the inference policy, and synchronous/asynchronous execution."""
