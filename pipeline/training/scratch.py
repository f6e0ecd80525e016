"""Build a fresh (untrained) small CLIP model as a sentence-transformers folder, offline.

Used by the tests, the offline demo and ``mmindex train --from-scratch``: a transformers
``CLIPModel`` from a small config, a byte-level BPE tokenizer trained on the given texts
(so any string tokenizes), and a Pillow-only CLIP image processor (no torchvision).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Iterable

from mmindex.errors import ModelError
from mmindex.pipeline.models.st_model import quiet_transformers

BASE_WORDS = (
    "a an the of on in at with and or to from by for is are this that photo picture image of "
    "small medium large big little tiny huge red green blue yellow orange purple pink white black "
    "cyan gray grey brown beige dark light sky grass noisy striped background corner center left "
    "right top bottom circle square triangle star hexagon diamond cross ring shape object dog cat "
    "man woman person people car tree house water beach mountain city street food table running"
)


@dataclass(frozen=True)
class ScratchSize:
    hidden: int
    layers: int
    heads: int
    image_size: int
    patch: int
    projection: int
    vocab: int
    max_tokens: int
    # The text tower's width, depth and heads when they differ from the image tower's.
    text_hidden: int | None = None
    text_layers: int | None = None
    text_heads: int | None = None


SIZES = {
    "tiny": ScratchSize(hidden=32, layers=2, heads=2, image_size=32, patch=8, projection=32, vocab=512, max_tokens=32),
    "small": ScratchSize(hidden=128, layers=4, heads=4, image_size=96, patch=8, projection=128, vocab=2048, max_tokens=48),
    # The shape of CLIP ViT-B/32, for timing benchmarks with random weights.
    "base": ScratchSize(hidden=768, layers=12, heads=12, image_size=224, patch=32, projection=512, vocab=49408,
                        max_tokens=77),
    # The shape of CLIP ViT-L/14 at 224 px (its text tower: 768 wide, 12 layers), for bench/gpu.py.
    "large": ScratchSize(hidden=1024, layers=24, heads=16, image_size=224, patch=14, projection=768, vocab=49408,
                         max_tokens=77, text_hidden=768, text_layers=12, text_heads=12),
}


def build_scratch_model(output: str | os.PathLike, size: str = "tiny", texts: Iterable[str] = (),
                        seed: int = 0) -> str:
    """Write a randomly initialised CLIP of ``size`` to ``output``; returns the folder."""
    if size not in SIZES:
        raise ModelError(f"unknown scratch model size {size!r}; choose one of {', '.join(SIZES)}")
    # torch takes seconds to import: only code that runs a model loads it
    import torch

    # a model library: loaded when a model loads, never for `import mmindex` or a fast query
    from sentence_transformers import SentenceTransformer

    # a model library: loaded when a model loads, never for `import mmindex` or a fast query
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    # a model library: loaded when a model loads, never for `import mmindex` or a fast query
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    quiet_transformers()
    s = SIZES[size]
    tokenizer = _train_tokenizer(list(texts), s.vocab, s.max_tokens)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=s.text_hidden or s.hidden,
            intermediate_size=4 * (s.text_hidden or s.hidden), num_hidden_layers=s.text_layers or s.layers,
            num_attention_heads=s.text_heads or s.heads, max_position_embeddings=s.max_tokens,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=s.hidden, intermediate_size=4 * s.hidden, num_hidden_layers=s.layers,
            num_attention_heads=s.heads, image_size=s.image_size, patch_size=s.patch,
        ),
        projection_dim=s.projection,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": s.image_size}, crop_size={"height": s.image_size, "width": s.image_size}
        ),
        tokenizer=tokenizer,
    )
    with tempfile.TemporaryDirectory() as raw:
        model.save_pretrained(raw)
        processor.save_pretrained(raw)
        SentenceTransformer(raw, device="cpu").save(str(output))
    return str(output)


def _train_tokenizer(texts: list[str], vocab_size: int, max_tokens: int):
    # loaded only when the fast query path embeds text
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    # a model library: loaded when a model loads, never for `import mmindex` or a fast query
    from transformers import PreTrainedTokenizerFast

    # transformers' CLIP pools the text at the first end-of-text token, except when its id
    # is 2 (a legacy rule that pools at the highest token id instead): keep it off id 2.
    specials = ["<|endoftext|>", "<|startoftext|>", "<|pad|>"]
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [t for t in texts if t] + [BASE_WORDS] * 4
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 1), ("<|endoftext|>", 0)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
        pad_token="<|pad|>", model_max_length=max_tokens,
    )
