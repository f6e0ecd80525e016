"""Tiny replicas of the ready-made ONNX repositories mmindex runs without torch (pipeline/models/onnx_repos.py),
with the real repositories' file names, graph input/output names and config keys, and random weights.

Each is exported from a tiny ``transformers.CLIPModel`` written by ``replicas.write_openai_clip`` (the reference:
its folder keeps the weights, so ``helpers.reference.Reference`` runs the same weights through transformers). The
layouts follow what the repositories hold (docs/models.md, "Running without torch", names the sources):

- ``Xenova/clip-vit-base-patch32`` (transformers.js): ``config.json``, ``preprocessor_config.json`` (openai's old
  feature-extractor form), ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``,
  ``vocab.json``, ``merges.txt`` at the top; ``onnx/vision_model.onnx`` (input ``pixel_values``; outputs
  ``image_embeds``, ``last_hidden_state``), ``onnx/text_model.onnx`` (input ``input_ids``; outputs ``text_embeds``,
  ``last_hidden_state``: optimum's CLIPVisionWithProjection / CLIPTextWithProjection ONNX configs) and their
  ``_quantized`` variants (8-bit weights, ONNX Runtime's dynamic quantisation).
- ``Qdrant/clip-ViT-B-32-vision`` and ``Qdrant/clip-ViT-B-32-text`` (FastEmbed): ``model.onnx`` and ``config.json``
  (``model_type`` ``clip_vision_model`` / ``clip_text_model``); the vision one ``preprocessor_config.json`` in the
  image-processor form (dicts, rescale keys), the text one the tokenizer files.
"""
from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from helpers import replicas

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")


@dataclass(frozen=True)
class OnnxReplica:
    """``model`` (and ``text_model`` for a FastEmbed pair) are what a user passes to mmindex; ``reference`` is the
    transformers replica holding the same weights."""

    name: str
    model: Path
    text_model: Path | None
    reference: replicas.Replica


def _towers(model, *, text_mask: bool):
    """(vision, text) modules of a transformers CLIPModel with the outputs optimum's configs name."""
    import torch

    class Vision(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            out = self.model.vision_model(pixel_values=pixel_values)
            return self.model.visual_projection(out.pooler_output), out.last_hidden_state

    class Text(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask=None):
            out = self.model.text_model(input_ids=input_ids, attention_mask=attention_mask)
            return self.model.text_projection(out.pooler_output), out.last_hidden_state

    return Vision().eval(), Text().eval()


def export_towers(reference: replicas.Replica, image_path: Path, text_path: Path, *, text_mask: bool = False,
                  quantized: bool = False) -> None:
    """Export the reference's towers to ``image_path`` / ``text_path`` (torch.onnx, the TorchScript exporter, in the
    test setup only), and beside each ``<stem>_quantized.onnx`` when ``quantized``."""
    import torch
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(reference.transformers_path).eval()
    vision, text = _towers(model, text_mask=text_mask)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    text_path.parent.mkdir(parents=True, exist_ok=True)
    end = model.config.text_config.vocab_size - 1  # <|endoftext|>, the highest id (<|startoftext|> below it)
    ids = torch.tensor([[end - 1, 5, 6, end], [end - 1, 5, end, end]])
    text_inputs = (ids, torch.ones_like(ids)) if text_mask else (ids,)
    text_names = ["input_ids", "attention_mask"] if text_mask else ["input_ids"]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(vision, (torch.randn(2, 3, replicas.IMAGE, replicas.IMAGE),), str(image_path),
                          input_names=["pixel_values"], output_names=["image_embeds", "last_hidden_state"],
                          dynamic_axes={"pixel_values": {0: "batch_size"}, "image_embeds": {0: "batch_size"},
                                        "last_hidden_state": {0: "batch_size"}}, opset_version=14, dynamo=False)
        torch.onnx.export(text, text_inputs, str(text_path), input_names=text_names,
                          output_names=["text_embeds", "last_hidden_state"],
                          dynamic_axes={**{name: {0: "batch_size", 1: "sequence_length"} for name in text_names},
                                        "text_embeds": {0: "batch_size"},
                                        "last_hidden_state": {0: "batch_size", 1: "sequence_length"}},
                          opset_version=14, dynamo=False)
    if quantized:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        for path in (image_path, text_path):
            quantize_dynamic(path, path.with_name(f"{path.stem}_quantized.onnx"), weight_type=QuantType.QUInt8)


def write_xenova_clip(folder: str | Path, seed: int = 0, *, quantized: bool = True) -> OnnxReplica:
    """Xenova/clip-vit-base-patch32 (transformers.js): the configs and tokenizer files at the top, no weights, the
    towers in onnx/."""
    root = Path(folder)
    reference = replicas.write_openai_clip(root.parent / f"{root.name}-transformers", seed=seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "preprocessor_config.json", *TOKENIZER_FILES):
        shutil.copy(reference.path / name, root / name)
    export_towers(reference, root / "onnx" / "vision_model.onnx", root / "onnx" / "text_model.onnx",
                  quantized=quantized)
    return OnnxReplica("xenova", root, None, reference)


def write_fastembed_pair(folder: str | Path, seed: int = 0, *, text_mask: bool = False) -> OnnxReplica:
    """Qdrant/clip-ViT-B-32-vision and Qdrant/clip-ViT-B-32-text (FastEmbed): ``folder/vision`` and ``folder/text``."""
    root = Path(folder)
    reference = replicas.write_openai_clip(root / "transformers", seed=seed)
    vision, text = root / "clip-ViT-B-32-vision", root / "clip-ViT-B-32-text"
    config = json.loads((reference.path / "config.json").read_text(encoding="utf-8"))
    towers = ((vision, "vision_config", "clip_vision_model", "CLIPVisionModelWithProjection"),
              (text, "text_config", "clip_text_model", "CLIPTextModelWithProjection"))
    for where, key, kind, architecture in towers:
        where.mkdir(parents=True, exist_ok=True)
        tower = {k: v for k, v in config[key].items() if k not in ("architectures", "model_type")}
        tower.update({"architectures": [architecture], "model_type": kind, "projection_dim": replicas.PROJECTION,
                      "torch_dtype": "float32", "transformers_version": "4.40.0"})
        (where / "config.json").write_text(json.dumps(dict(sorted(tower.items())), indent=2) + "\n", encoding="utf-8")
    (vision / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": replicas.IMAGE, "width": replicas.IMAGE}, "do_center_crop": True,
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": replicas.CLIP_MEAN, "image_processor_type": "CLIPImageProcessor", "image_std": replicas.CLIP_STD,
        "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": replicas.IMAGE},
    }, indent=2) + "\n", encoding="utf-8")
    for name in TOKENIZER_FILES:
        shutil.copy(reference.path / name, text / name)
    export_towers(reference, vision / "model.onnx", text / "model.onnx", text_mask=text_mask)
    return OnnxReplica("fastembed", vision, text, reference)
