"""What a multi-GPU run needs of the trainer, checked on the CPU: every collective's tensor on the engine's device
(NCCL reduces only CUDA tensors, so a CPU tensor fails the first logged step of a GPU run), the precision chosen by
the device, and a model that mixes dtypes refused before DeepSpeed flattens it.

CI has no GPU, so the engine's device is faked as `meta` (a device that is not the CPU) and the collectives are
replaced by a recorder: a tensor made on the CPU regardless of the engine is caught, which is the defect this guards.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from vlaforge.training import trainer as trainer_module
from vlaforge.training.data.collate import Batcher
from vlaforge.training.data.corpus_loader import CorpusLoader
from vlaforge.training.data.robot_transform import RobotSampleTransform
from vlaforge.training.model import presets
from vlaforge.training.model.choice_policies import ChoicePoliciesConfig
from vlaforge.training.step_tally import StepTally
from vlaforge.training.trainer import LOGGED_LOSSES, Trainer, check_one_dtype
from vlaforge.training.trainer_config import Precision, TrainerConfig

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "reduce", "reduce_scatter_tensor", "broadcast",
               "all_to_all_single", "gather", "scatter")


class Collected(Exception):
    """Raised by the recording collective: the test has what it needs (a meta tensor holds no numbers to read)."""


@pytest.fixture
def recorded(monkeypatch) -> list[torch.device]:
    """Every torch.distributed collective replaced by one that records its tensor's device and stops."""
    devices: list[torch.device] = []

    def record(tensor, *args, **kwargs):
        first = tensor[0] if isinstance(tensor, (list, tuple)) else tensor
        devices.append(first.device)
        raise Collected

    for name in COLLECTIVES:
        monkeypatch.setattr(dist, name, record)
    return devices


class FakeEngine:
    """What the trainer asks of DeepSpeed's engine when it logs a step or evaluates, on a device that is not the CPU."""

    device = torch.device("meta")

    def get_lr(self):
        return [1e-4]

    def get_global_grad_norm(self):
        return 0.5

    def train(self):
        return self

    def eval(self):
        return self


def two_rank_trainer(tmp_path) -> Trainer:
    chunk = presets.vla_tiny().dit.chunk_len
    loader = CorpusLoader.Config(corpus_url="c.json", processor="p", batch=Batcher.Config(batch_size=2),
                                 robot=RobotSampleTransform.Config(chunk_len=chunk))
    config = TrainerConfig(phase="posttrain_sync", loader=loader, output_dir=str(tmp_path), vlm_dir="v",
                           model=presets.vla_tiny(), choice=ChoicePoliciesConfig(chunk_len=chunk))
    trainer = Trainer(config, rank=1, world_size=2)
    trainer.engine = FakeEngine()
    return trainer


def test_the_step_tally_reduces_a_tensor_made_on_the_device_it_is_given(recorded):
    tally = StepTally(LOGGED_LOSSES)
    tally.add({"loss": 1.0}, robot_samples=2, data_wait=0.1)
    with pytest.raises(Collected):
        tally.reduce(torch.device("meta"), world_size=2)
    assert recorded == [torch.device("meta")]


def test_a_logged_step_reduces_on_the_engines_device(recorded, tmp_path):
    trainer = two_rank_trainer(tmp_path)
    tally = StepTally(LOGGED_LOSSES)
    tally.add({"loss": 1.0, "flow_matching": 1.0}, robot_samples=2, tokens=40, flops=1e9, data_wait=0.01)
    with pytest.raises(Collected):
        trainer._log_step(tally, [], seconds=0.2)
    assert recorded == [FakeEngine.device]


def test_a_validation_pass_reduces_on_the_engines_device(recorded, tmp_path, monkeypatch):
    class EmptySplit:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return None

        def __iter__(self):
            return iter(())

    monkeypatch.setattr(trainer_module, "CorpusLoader", EmptySplit)
    with pytest.raises(Collected):
        two_rank_trainer(tmp_path).evaluate()
    assert recorded == [FakeEngine.device]


def test_one_rank_reads_the_tally_back_without_a_collective():
    tally = StepTally(LOGGED_LOSSES)
    tally.add({"loss": 2.0, "next_token": 4.0}, robot_samples=3, vl_samples=1, tokens=50, data_wait=0.2)
    tally.add({"loss": 4.0}, robot_samples=4, tokens=30, data_wait=0.1)
    record = tally.reduce(torch.device("cpu"), world_size=1)
    assert record["loss"] == 3.0 and record["next_token"] == 4.0 and record["choice"] is None
    assert (record["robot_samples"], record["vl_samples"], record["tokens"]) == (7, 1, 80)
    assert record["data_wait"] == pytest.approx(0.3)


def test_auto_precision_is_bf16_on_a_gpu_that_has_it_and_fp32_on_the_cpu():
    assert Precision.AUTO.resolve(bf16_supported=True) is Precision.BF16
    assert Precision.AUTO.resolve(bf16_supported=False) is Precision.FP32
    assert Precision.FP32.resolve(bf16_supported=True) is Precision.FP32
    assert TrainerConfig.__dataclass_fields__["precision"].default is Precision.AUTO


def test_a_model_that_mixes_dtypes_is_refused_naming_them(build_model):
    """A real Qwen3-VL checkpoint loads in bf16; beside an fp32 DiT, ZeRO would flatten both into one buffer."""
    model = build_model(live=False)
    model.vlm.to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"the model mixes dtypes: precision fp32 needs every parameter in float32, "
                                         r"but \d+ in bfloat16 \(e\.g\. vlm\.model\."):
        check_one_dtype(model, torch.float32, Precision.FP32)
    model.to(torch.bfloat16)
    check_one_dtype(model, torch.bfloat16, Precision.BF16)
