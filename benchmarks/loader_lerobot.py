"""LeRobot's own `LeRobotDataset`, read at random, timed: the other side of `benchmarks/loader.py`.

Runs in a separate virtual environment that has `lerobot` (it cannot live in the project's: it needs torch < 2.11
and a huggingface-hub that clashes with transformers 5), so it imports nothing from vlaforge:

    /work/lerobot-venv/bin/python benchmarks/loader_lerobot.py --root DATASET --backend pyav --samples 2000

Prints one JSON line: {"backend", "samples", "wall_s", "cpu_s", "frames"}. `cpu_s` counts every thread of the
process (decoders may use several), so samples per CPU second is the per-core rate.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="a LeRobot v3.0 dataset directory")
    parser.add_argument("--backend", required=True, choices=["torchcodec", "pyav"])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    dataset = LeRobotDataset("vlaforge/loader-benchmark", root=args.root, video_backend=args.backend)
    order = np.random.default_rng(args.seed).permutation(len(dataset))
    order = np.resize(order, args.samples)  # random access; repeats the permutation if the dataset is smaller
    dataset[int(order[-1])]  # warm-up: opens the video files and builds the decoders
    frames = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for index in order:
        sample = dataset[int(index)]
        frames += sum(1 for key in dataset.meta.video_keys if key in sample)
    result = {"backend": args.backend, "samples": int(args.samples), "wall_s": time.perf_counter() - wall,
              "cpu_s": time.process_time() - cpu, "frames": frames}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
