"""The process a launcher starts for each rank: `python -m vlaforge.training.train_main --config trainer_config.json`.

An entry point, so it is where the distributed environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ... as
torchrun or DeepSpeed's launcher set them) is read and logging is set up. Everything else is `Trainer`. DeepSpeed
picks its accelerator (CUDA, or its CPU accelerator with gloo: set DS_ACCELERATOR=cpu to be explicit) and the
matching communication backend (NCCL on GPUs). On a GPU node each rank takes the GPU of its LOCAL_RANK before the
process group forms, so NCCL's first collective (a barrier) runs on that rank's own GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
import tempfile

from vlaforge.training.policy_eval_command import PolicyCallback
from vlaforge.training.trainer_config import TrainerConfig

LOCAL_RANK = "LOCAL_RANK"


def run(config: TrainerConfig, *, single_process: bool = False,
        policy_callback: PolicyCallback | None = None) -> list[dict]:
    """Train one phase as one rank of the job torchrun started, or as the whole job in this process
    (`single_process`: a 1-rank gloo group through a file store, kept for later runs in this process, so a caller such
    as `vlaforge train --nproc 1` or a test can run it in-process). `policy_callback` (in-process callers) takes the
    place of `config.policy_eval_command`. Returns this run's log lines."""
    import deepspeed
    import torch.distributed as dist

    from vlaforge.training.trainer import Trainer

    if single_process and not dist.is_initialized():
        # One 1-rank group for the life of this process: DeepSpeed caches its groups, so a later run in the same
        # process (a test, a notebook) must find the same group, not a new one.
        handle, store = tempfile.mkstemp(prefix="vlaforge-process-group-")
        os.close(handle)
        deepspeed.init_distributed(auto_mpi_discovery=False, init_method=f"file://{store}", rank=0, world_size=1,
                                   verbose=False)
    elif not single_process:
        _take_local_gpu()
        deepspeed.init_distributed(verbose=False)
    # deepspeed.initialize insists on LOCAL_RANK in the environment, which only launchers set: set it for this run.
    previous_local_rank = os.environ.get(LOCAL_RANK)
    if single_process:
        os.environ[LOCAL_RANK] = "0"
    try:
        trainer = Trainer(config, rank=dist.get_rank(), world_size=dist.get_world_size(),
                          policy_callback=policy_callback)
        trainer.setup()
        records = trainer.train()
        if config.export:
            trainer.export()
        dist.barrier()
    finally:
        if single_process:
            _restore(LOCAL_RANK, previous_local_rank)
    return records


def _take_local_gpu() -> None:
    """Make LOCAL_RANK's GPU this process's current device (no-op without CUDA)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get(LOCAL_RANK, "0")))


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlaforge.training.train_main")
    parser.add_argument("--config", required=True, type=pathlib.Path, help="a TrainerConfig as JSON (to_dict)")
    parser.add_argument("-v", "--verbose", action="store_true", help="DeepSpeed's own INFO lines too")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))  # set by torchrun
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"rank{rank} %(asctime)s %(levelname)s %(name)s: %(message)s")
    # DeepSpeed narrates its setup and every checkpoint file at INFO; the trainer's step lines say what matters.
    logging.getLogger("DeepSpeed").setLevel(logging.INFO if args.verbose else logging.WARNING)
    config = TrainerConfig.from_dict(json.loads(args.config.read_text()))
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
