"""Tiny random-weight Grounding DINO, MM-Grounding-DINO (LLMDet) and SAM checkpoints, for tests, benchmarks and the
demo: no machine here can download real weights.

Each is built from a config, saved with `save_pretrained` (model and processor) and then loaded by the production
code path with `from_pretrained`, exactly like a real checkpoint. Grounding DINO's code assumes BERT's special
token ids ([CLS]=101, [SEP]=102, "."=1012, "?"=1029: it builds its text attention masks from them), so the tiny
vocabulary puts those tokens at those ids. The boxes such models predict are random: tests assert on plumbing and
on consensus behaviour, never on what they see.
"""

from __future__ import annotations

import pathlib

import torch

WORDS = """
red mug shelf blue block bowl cup marker drawer top cabinet table towel cloth laptop lid green yellow robot gripper
elephant can pot stove sponge bag chips basket faucet cat astronaut rocket coffee flag person box bottle plate
""".split()
SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}


def tiny_bert_vocab() -> dict[str, int]:
    """A vocabulary with BERT's special tokens at BERT's ids, unused fillers between, then `WORDS`."""
    by_id = {index: token for token, index in SPECIAL_IDS.items()}
    first_word = max(SPECIAL_IDS.values()) + 1
    vocab = {by_id.get(i, f"[unused{i}]"): i for i in range(first_word)}
    vocab.update({word: first_word + i for i, word in enumerate(WORDS)})
    return vocab


def _tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab=tiny_bert_vocab())


def _detector_config(config_class, *, vocab_size: int, max_text_len: int):
    from transformers import BertConfig, SwinConfig

    backbone = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2, image_size=64,
                          out_indices=[2, 3, 4], out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64)
    return config_class(
        backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2, decoder_attention_heads=2,
        num_queries=30, max_text_len=max_text_len, encoder_n_points=2, decoder_n_points=2,
    )


def write_tiny_detector(output: str | pathlib.Path, *, architecture: str = "grounding_dino", seed: int = 0,
                        max_text_len: int = 32, image_edges: tuple[int, int] = (80, 120)) -> pathlib.Path:
    """A tiny Grounding DINO ("grounding_dino") or MM-Grounding-DINO ("mm_grounding_dino") checkpoint directory.

    `image_edges` is the processor's (shortest, longest) resize edge: small, so a forward pass takes milliseconds.
    """
    import transformers

    names = {"grounding_dino": ("GroundingDinoConfig", "GroundingDinoForObjectDetection"),
             "mm_grounding_dino": ("MMGroundingDinoConfig", "MMGroundingDinoForObjectDetection")}
    config_name, model_name = names[architecture]
    tokenizer = _tokenizer()
    config = _detector_config(getattr(transformers, config_name), vocab_size=len(tokenizer.get_vocab()) + 8,
                              max_text_len=max_text_len)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).eval()
    processor = transformers.GroundingDinoProcessor(
        image_processor=transformers.GroundingDinoImageProcessor(
            size={"shortest_edge": image_edges[0], "longest_edge": image_edges[1]}),
        tokenizer=tokenizer,
    )
    output = pathlib.Path(output)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    return output


def write_tiny_sam(output: str | pathlib.Path, *, seed: int = 0, image_size: int = 64) -> pathlib.Path:
    """A tiny SAM checkpoint directory (model and processor) working on `image_size`-pixel inputs."""
    from transformers import (
        SamConfig,
        SamImageProcessor,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    patch = 8
    config = SamConfig(
        vision_config=SamVisionConfig(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
                                      image_size=image_size, patch_size=patch, window_size=4, global_attn_indexes=[1],
                                      num_pos_feats=8, mlp_dim=64),
        prompt_encoder_config=SamPromptEncoderConfig(hidden_size=16, image_size=image_size, patch_size=patch,
                                                     mask_input_channels=4),
        mask_decoder_config=SamMaskDecoderConfig(hidden_size=16, mlp_dim=32, num_hidden_layers=2,
                                                 num_attention_heads=2, iou_head_hidden_dim=16),
    )
    torch.manual_seed(seed)
    model = SamModel(config).eval()
    mask_edge = image_size // 4
    processor = SamProcessor(image_processor=SamImageProcessor(
        size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size},
        mask_size={"longest_edge": mask_edge}, mask_pad_size={"height": mask_edge, "width": mask_edge}))
    output = pathlib.Path(output)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    return output


OWL_WORDS = ("a", "photo", "of", "an")
"""The words of OWL's query template ("a photo of a {phrase}"), besides `WORDS`."""


def tiny_clip_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP byte-pair vocabulary and merges that spell every word of `WORDS` and `OWL_WORDS` as one token: each
    word is built letter by letter, the last letter carrying CLIP's end-of-word mark. The special tokens come last,
    as in CLIP's own vocabulary: OWL takes a text query whose first id is 0 for padding and masks it out."""
    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(letter, len(vocab))
        vocab.setdefault(letter + "</w>", len(vocab))
    for word in dict.fromkeys((*OWL_WORDS, *WORDS)):
        piece = word[0] if len(word) > 1 else word[0] + "</w>"
        for index, letter in enumerate(word[1:], start=1):
            part = letter + "</w>" if index == len(word) - 1 else letter
            merge = (piece, part)
            piece += part
            if merge not in merges:
                merges.append(merge)
            vocab.setdefault(piece, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def write_tiny_owl(output: str | pathlib.Path, *, architecture: str = "owlv2", seed: int = 0,
                   image_size: int = 64) -> pathlib.Path:
    """A tiny OWLv2 ("owlv2") or OWL-ViT ("owlvit") checkpoint directory (model, CLIP tokenizer, image processor).

    The tokenizer keeps OWL's 16-token text length, as the released checkpoints do.
    """
    import transformers

    names = {"owlv2": ("Owlv2Config", "Owlv2ForObjectDetection", "Owlv2Processor", "Owlv2ImageProcessor"),
             "owlvit": ("OwlViTConfig", "OwlViTForObjectDetection", "OwlViTProcessor", "OwlViTImageProcessor")}
    config_name, model_name, processor_name, image_processor_name = names[architecture]
    vocab, merges = tiny_clip_bpe()
    tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)
    config = getattr(transformers, config_name)(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16,
                     "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
                     "pad_token_id": vocab["<|endoftext|>"]},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": image_size, "patch_size": 16},
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).eval()
    image_processor = getattr(transformers, image_processor_name)(size={"height": image_size, "width": image_size},
                                                                  **({} if architecture == "owlv2" else {
                                                                      "crop_size": {"height": image_size,
                                                                                    "width": image_size}}))
    processor = getattr(transformers, processor_name)(image_processor=image_processor, tokenizer=tokenizer)
    output = pathlib.Path(output)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    return output


def tiny_original_sam(*, seed: int = 0, image_size: int = 64) -> "torch.nn.Module":
    """A tiny SAM built from Meta's `segment_anything` modules (windowed and global attention blocks, a two-way
    decoder with the released 8 heads), random weights."""
    import functools

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    patch, width = 16, 16
    torch.manual_seed(seed)
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=2, embed_dim=32, img_size=image_size, mlp_ratio=4,
            norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6), num_heads=2, patch_size=patch,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=(1,), window_size=2, out_chans=width),
        prompt_encoder=PromptEncoder(embed_dim=width, image_embedding_size=(image_size // patch,) * 2,
                                     input_image_size=(image_size, image_size), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
            depth=2, embedding_dim=width, mlp_dim=32, num_heads=8), transformer_dim=width, iou_head_depth=3,
            iou_head_hidden_dim=16),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def write_tiny_original_sam(path: str | pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """`tiny_original_sam` saved as Meta's releases are: a bare state dict in a `.pth` file."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_original_sam(seed=seed).state_dict(), path)
    return path
