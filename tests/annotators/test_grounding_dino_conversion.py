"""IDEA's original Grounding DINO checkpoints converted to the transformers format, tested against IDEA's own code.

A tiny random-weight model is built with IDEA's package (`rf-groundingdino`) from its own released config file
(GroundingDINO_SwinT_OGC.py, with the widths shrunk) and saved as the releases are (`{"model": state_dict}`). That
package cannot build a model under transformers 5 (the converter's docstring has the error), so this test lends its
BERT adapter the three methods it reads at construction and, for the forward pass, swaps the adapter for a plain
call into the same BERT weights: everything else (Swin, the deformable encoder and decoder, fusion, heads) runs as
IDEA wrote it, and the converted model must give the same boxes and logits.
"""

import pathlib

import numpy as np
import pytest
import torch

from vlaforge.annotators.grounding_dino import grounding_dino
from vlaforge.annotators.grounding_dino_conversion import (
    ConversionError,
    convert_grounding_dino,
    read_original_config,
)
from vlaforge.annotators.grounding_frame import RunStatus
from vlaforge.flows.cli import main
from vlaforge.flows.sample_data.tiny_detectors import tiny_bert_vocab

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
groundingdino = pytest.importorskip("groundingdino")
TINY = {"enc_layers = 6": "enc_layers = 1", "dec_layers = 6": "dec_layers = 2",
        "dim_feedforward = 2048": "dim_feedforward = 64", "num_queries = 900": "num_queries = 30",
        "enc_n_points = 4": "enc_n_points = 2", "dec_n_points = 4": "dec_n_points = 2",
        "max_text_len = 256": "max_text_len = 32", "use_checkpoint = True": "use_checkpoint = False",
        "use_transformer_ckpt = True": "use_transformer_ckpt = False"}
"""IDEA's released config, shrunk (its hidden_dim stays 256: the original code hard-codes 256-wide text positions)."""


class _BertCall(torch.nn.Module):
    """IDEA's BERT adapter calls transformers-4 internals; this calls the same BERT through its public forward."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, **_):
        mask = attention_mask[:, None] if attention_mask.ndim == 3 else attention_mask
        return self.bert(input_ids=input_ids, attention_mask=mask, token_type_ids=token_type_ids,
                         position_ids=position_ids)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """(IDEA's model, its config file, its checkpoint, the BERT directory)."""
    from groundingdino.models import build_model
    from groundingdino.util.slconfig import SLConfig
    from transformers import BertConfig, BertModel, BertTokenizer

    work = tmp_path_factory.mktemp("gdino-original")
    bert_dir = work / "bert-base-uncased"
    BertTokenizer(vocab=tiny_bert_vocab()).save_pretrained(bert_dir)
    torch.manual_seed(1)
    BertModel(BertConfig(vocab_size=len(tiny_bert_vocab()) + 8, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(bert_dir)
    released = pathlib.Path(groundingdino.__file__).parent / "config" / "GroundingDINO_SwinT_OGC.py"
    text = released.read_text().replace('"bert-base-uncased"', repr(str(bert_dir)))
    for old, new in TINY.items():
        assert old in text, old
        text = text.replace(old, new)
    config_path = work / "GroundingDINO_SwinT_OGC_tiny.py"
    config_path.write_text(text)
    patch = pytest.MonkeyPatch()
    for name in ("get_extended_attention_mask", "invert_attention_mask", "get_head_mask"):
        patch.setattr(BertModel, name, lambda *args, **kwargs: None, raising=False)
    args = SLConfig(read_original_config(config_path))
    args.device = "cpu"
    torch.manual_seed(0)
    model = build_model(args).eval()
    patch.undo()
    with torch.no_grad():  # many heads start at zero: give every weight a value, so a misplaced one shows
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    checkpoint = work / "groundingdino_tiny.pth"
    torch.save({"model": model.state_dict()}, checkpoint)
    bert = BertModel.from_pretrained(bert_dir)
    bert.load_state_dict({k[len("bert."):]: v for k, v in model.state_dict().items() if k.startswith("bert.")},
                         strict=False)
    model.bert = _BertCall(bert.eval())
    return model, config_path, checkpoint, bert_dir


def test_the_converted_model_gives_the_original_boxes_and_logits(original, tmp_path, frame_factory):
    from transformers import GroundingDinoForObjectDetection, GroundingDinoProcessor

    model, config_path, checkpoint, bert_dir = original
    output = convert_grounding_dino(config_path, checkpoint, bert_dir, tmp_path / "converted", image_edges=(96, 128))
    converted = GroundingDinoForObjectDetection.from_pretrained(output).eval()
    processor = GroundingDinoProcessor.from_pretrained(output)
    pixels = frame_factory(0, size=(72, 96)).pixels
    inputs = processor(images=pixels, text="red mug. shelf.", return_tensors="pt")
    tokens = inputs["input_ids"].shape[1]
    with torch.no_grad():
        theirs = model(inputs["pixel_values"], captions=["red mug . shelf ."])
        ours = converted(**inputs)
    np.testing.assert_allclose(ours.pred_boxes.numpy(), theirs["pred_boxes"].numpy(), atol=1e-5)
    np.testing.assert_allclose(ours.logits[..., :tokens].numpy(), theirs["pred_logits"][..., :tokens].numpy(),
                               atol=1e-3, rtol=1e-4)

    stage = grounding_dino(str(output), box_threshold=0.0, text_threshold=0.0, device="cpu").build()
    stage.setup()  # the detector loads the converted directory like any transformers checkpoint
    (frame,) = stage([frame_factory(1, size=(72, 96))])
    assert frame.runs[0].status == RunStatus.OK and frame.runs[0].detections


def test_the_cli_converts_and_bad_input_is_named(original, tmp_path, capsys):
    _, config_path, checkpoint, bert_dir = original
    assert main(["convert", "grounding-dino", "--config", str(config_path), "--checkpoint", str(checkpoint),
                 "--text-encoder", str(bert_dir), "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors").exists() and "converted" in capsys.readouterr().out
    executable = tmp_path / "computed.py"
    executable.write_text("import os\nhidden_dim = 256\n")
    with pytest.raises(ConversionError, match="line 1 is not a `name = value` assignment"):
        read_original_config(executable)
    torch.save({"model": {"head.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    assert main(["convert", "grounding-dino", "--config", str(config_path), "--checkpoint", str(tmp_path / "other.pth"),
                 "--text-encoder", str(bert_dir), "--output", str(tmp_path / "no")]) == 2
    assert "fit no known module" in capsys.readouterr().err
