"""The training end of `vlaforge demo`: batches of both kinds streamed from the corpus by `CorpusLoader`, then a few
AdamW steps of the tiny VLA model on them (plain PyTorch: there is no DeepSpeed trainer yet)."""

from __future__ import annotations

import dataclasses
import pathlib

from rich.console import Console
from rich.table import Table

from vlaforge.flows.demo_steps import DemoSizes


@dataclasses.dataclass(frozen=True)
class StepLoss:
    """One optimizer step's losses (None where its batch had no sample of that kind)."""

    step: int
    robot_samples: int
    vl_samples: int
    flow_matching: float | None
    next_token: float | None
    total: float


def stream_batches(corpus: pathlib.Path, vlm_dir: pathlib.Path, sizes: DemoSizes, console: Console) -> list:
    """Step 6: `sizes.batches` CorpusBatches from the corpus manifest (2 DataLoader workers, VL:robot 1:6, mixed
    batches), tokenized by the tiny Qwen3-VL's processor."""
    import itertools

    from vlaforge.training.collate import Batcher, MixPolicy
    from vlaforge.training.corpus_loader import CorpusLoader
    from vlaforge.training.model import presets
    from vlaforge.training.robot_batches import RobotSampleTransform

    console.rule("6. the corpus loader: robot and VL batches by corpus URL (`training/corpus_loader.py`)")
    chunk = presets.vla_tiny().dit.chunk_length
    config = CorpusLoader.Config(
        corpus_url=str(corpus), processor=str(vlm_dir), num_workers=2,
        robot=RobotSampleTransform.Config(image_size=(64, 64), chunk_length=chunk),
        batch=Batcher.Config(batch_size=sizes.batch_size, policy=MixPolicy.MIXED),
    )
    with CorpusLoader(config) as loader:
        batches = list(itertools.islice(loader, sizes.batches))
    table = Table(title=f"{len(batches)} batches of {sizes.batch_size} from {corpus} (processor: {vlm_dir})")
    for column in ("batch", "robot samples by component", "VL samples by task", "shapes"):
        table.add_column(column)
    for index, batch in enumerate(batches, 1):
        table.add_row(str(index), _counts(batch.robot.components if batch.robot else []),
                      _counts(batch.vl.tasks if batch.vl else []), _shapes(batch))
    console.print("robot: frames [B, cameras, H, W, 3], action chunks [B, T, 32] normalized and padded; VL: token ids "
                  "[B, S] through the processor's chat template, labels on the answers only")
    console.print(table)
    return batches


def _counts(names: list[str]) -> str:
    from collections import Counter

    return ", ".join(f"{name} {n}" for name, n in sorted(Counter(names).items())) or "-"


def _shapes(batch) -> str:
    parts = []
    if batch.robot is not None:
        parts.append(f"frames {list(batch.robot.images.shape)} actions {list(batch.robot.actions.shape)}")
    if batch.vl is not None:
        parts.append(f"VL ids {list(batch.vl.inputs['input_ids'].shape)}")
    return "\n".join(parts)


def train_steps(batches: list, vlm_dir: pathlib.Path, console: Console, seed: int = 0) -> list[StepLoss]:
    """Step 7: one AdamW step per batch of the tiny VLA model (the tiny Qwen3-VL + a 2-layer DiT): flow matching on
    the robot part, next-token prediction on the VL part, summed."""
    import torch

    from vlaforge.training.model import presets
    from vlaforge.training.model.vla import VLAModel

    console.rule("7. training steps: the tiny VLA model on those batches")
    console.print("plain PyTorch (torch.optim.AdamW) on the tiny random-weight model: there is no DeepSpeed trainer "
                  "yet; these steps show the batches train, not a useful model", style="bold yellow")
    torch.manual_seed(seed)
    model = VLAModel.from_vlm_pretrained(str(vlm_dir), presets.vla_tiny())
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    losses = []
    for step, batch in enumerate(batches, 1):
        optimizer.zero_grad()
        flow = model.flow_matching_loss(batch.robot.model_batch())["loss"] if batch.robot is not None else None
        text = model.vlm.next_token_loss(batch.vl.inputs, batch.vl.labels) if batch.vl is not None else None
        total = sum(loss for loss in (flow, text) if loss is not None)
        total.backward()
        optimizer.step()
        losses.append(StepLoss(step, len(batch.robot or ()), len(batch.vl or ()), _value(flow), _value(text),
                               float(total.detach())))
    console.print(_loss_table(losses))
    return losses


def _value(loss) -> float | None:
    return None if loss is None else float(loss.detach())


def _loss_table(losses: list[StepLoss]) -> Table:
    table = Table(title="AdamW steps (lr 1e-4): flow-matching loss (robot) + next-token loss (VL)")
    for column in ("step", "robot", "VL", "flow matching", "next token", "total"):
        table.add_column(column, justify="right")
    for loss in losses:
        table.add_row(str(loss.step), str(loss.robot_samples), str(loss.vl_samples), _shown(loss.flow_matching),
                      _shown(loss.next_token), _shown(loss.total))
    return table


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
