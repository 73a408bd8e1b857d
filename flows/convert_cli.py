"""`vlaforge convert grounding-dino`: an original checkpoint into the transformers format our detectors load.

IDEA's Grounding DINO package cannot build a model beside transformers 5 (`annotators/grounding_dino_conversion.py`
says why), so its checkpoints are converted once; the output directory is then a `--gdino` (or `--llmdet`)
checkpoint like any other. SAM's original checkpoints need no conversion: `--sam sam_vit_b_01ec64.pth` runs them
through Meta's own package.
"""

from __future__ import annotations

import argparse

from rich.console import Console


def add_parser(verbs: argparse._SubParsersAction) -> None:
    convert = verbs.add_parser("convert", help="convert an original model checkpoint to the transformers format")
    kinds = convert.add_subparsers(dest="kind", required=True)
    gdino = kinds.add_parser("grounding-dino", help="IDEA's Grounding DINO .pth (+ its Python config and BERT)")
    gdino.add_argument("--config", required=True, help="the model's original config, e.g. GroundingDINO_SwinT_OGC.py")
    gdino.add_argument("--checkpoint", required=True, help="the original checkpoint, e.g. groundingdino_swint_ogc.pth")
    gdino.add_argument("--text-encoder", required=True,
                       help="local BERT directory (the config's text_encoder_type, e.g. bert-base-uncased)")
    gdino.add_argument("--output", required=True, help="the transformers checkpoint directory to write")


def run(args: argparse.Namespace, console: Console) -> int:
    from vlaforge.annotators.grounding_dino_conversion import convert_grounding_dino

    output = convert_grounding_dino(args.config, args.checkpoint, args.text_encoder, args.output)
    console.print(f"converted {args.checkpoint} -> {output}: use it as `vlaforge annotate --gdino {output}`")
    return 0
