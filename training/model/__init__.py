"""The Xiaomi-Robotics-0 model: a Qwen3-VL backbone and a DiT that share attention layer by layer."""
