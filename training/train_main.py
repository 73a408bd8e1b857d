"""The process `torchrun` starts for each rank: `python -m vlaforge.training.train_main --config trainer_config.json`.

An entry point, so it is where the distributed environment (RANK, WORLD_SIZE, MASTER_ADDR, ... as torchrun sets
them) is read and logging is set up. Everything else is `Trainer`. DeepSpeed picks its accelerator (CUDA, or its
CPU accelerator with gloo: set DS_ACCELERATOR=cpu to be explicit) and the matching communication backend.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys

from vlaforge.training.trainer_config import TrainerConfig


def run(config: TrainerConfig, *, verbose: bool = False) -> list[dict]:
    """Train one phase in this process (one rank of the job); returns this run's log lines."""
    import deepspeed
    import torch.distributed as dist

    from vlaforge.training.trainer import Trainer

    deepspeed.init_distributed()
    rank, world_size = dist.get_rank(), dist.get_world_size()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"rank{rank} %(levelname)s %(name)s: %(message)s", force=True)
    # DeepSpeed narrates its setup and every checkpoint file at INFO; our step lines say what matters.
    logging.getLogger("DeepSpeed").setLevel(logging.INFO if verbose else logging.WARNING)
    trainer = Trainer(config, rank=rank, world_size=world_size)
    trainer.setup()
    records = trainer.train()
    if config.export:
        trainer.export()
    dist.barrier()
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlaforge.training.train_main")
    parser.add_argument("--config", required=True, type=pathlib.Path, help="a TrainerConfig as JSON (to_dict)")
    parser.add_argument("-v", "--verbose", action="store_true", help="DeepSpeed's own INFO lines too")
    args = parser.parse_args(argv)
    config = TrainerConfig.from_dict(json.loads(args.config.read_text()))
    run(config, verbose=args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
