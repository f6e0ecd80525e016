"""Tiny random-weight replicas of real Hub model folders, with the file names, folder layout and config
keys those repositories publish, so that mmindex meets the layouts users download, offline.

Each ``write_*`` function fills a folder and returns a ``Replica`` that says where transformers' own
model and processor live in it (the reference implementation) and where the model's text stops.
Sizes are tiny (hidden 32, 2 layers, 32 px images, a few hundred tokens) and the text towers have
few positions, so an over-long caption is cheap; weights are random but seeded. Keys the real
configs carry are kept, with their values shrunk; keys a tiny model needs that the real config
leaves at the library default (a layer count, an image size) are added. The real files these
follow are named in each function's docstring.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HIDDEN, LAYERS, HEADS, INTERMEDIATE = 32, 2, 2, 37
IMAGE, PATCH = 32, 8
PROJECTION = 24  # CLIP-family embedding size; the multilingual text model's Dense layer maps to it too
CLIP_POSITIONS = 24  # real: 77 (config and tokenizer agree; they agree here too)
CHINESE_CLIP_POSITIONS = 32  # real: 512, and its tokenizer declares no limit
SIGLIP_TEXT_LENGTH = 64  # real: 64 (the SigLIP config has no max_position_embeddings key; 64 is its default)
MULTILINGUAL_POSITIONS, MULTILINGUAL_MAX_SEQ = 32, 24  # real: 512 positions, max_seq_length 128

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

ENGLISH = (
    "a an the of on in at with and or to from by for is are this that photo picture image of "
    "small medium large big little tiny huge red green blue yellow orange purple pink white black "
    "cyan gray grey brown beige dark light sky grass noisy striped background corner center left "
    "right top bottom circle square triangle star hexagon diamond cross ring shape object dog cat "
    "man woman person people car tree house water beach mountain city street food table running"
).split()
CHINESE = (
    "一个 一张 小的 大的 中等大小 红色 绿色 蓝色 黄色 橙色 紫色 粉色 白色 黑色 青色 灰色 米色 深色 天蓝色 草绿色 "
    "圆形 正方形 三角形 五角星 六边形 菱形 十字形 圆环 位于画面中央 位于左侧 位于右侧 位于上方 位于下方 "
    "背景 噪点 条纹 角落里有 照片 图片 狗 猫 男人 女人 汽车 树 房子 水 海滩 山 城市 街道 食物 桌子 在 上 的 和"
).split()
PUNCTUATION = list(".,;:!?'\"()-/&%$#@*+=<>[]_~") + list("，。、：；！？（）“”")


@dataclass(frozen=True)
class Replica:
    """A written replica: ``path`` is what a user passes to mmindex; ``transformers_path`` is the folder
    holding the transformers model and processor (the reference); ``text_limit`` is the most tokens
    (special ones included) the text tower takes; ``padding`` is how the model's docs pad captions."""

    name: str
    repo: str
    path: Path
    transformers_path: Path | None
    model_class: str | None
    text_limit: int
    padding: str = "longest"
    modalities: tuple[str, ...] = ("image", "text")


# -- file helpers --------------------------------------------------------------------------------------

def _write_json(path: Path, data, *, compact: bool = False, newline: bool = True) -> None:
    """JSON as the Hub file has it: indented (save_pretrained style, ending in a newline; sentence-transformers
    writes none) or on one line (older tokenizer files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if compact:
        text = json.dumps(data, ensure_ascii=False)
    else:
        text = json.dumps(data, indent=2, ensure_ascii=False) + ("\n" if newline else "")
    path.write_text(text, encoding="utf-8")


def _save_weights(model, folder: Path, *, safetensors: bool = False, pickled: bool = False,
                  extra: dict | None = None) -> None:
    """The model's weights under the names the repo uses (``model.safetensors``, ``pytorch_model.bin``).

    Old checkpoints also pickled buffers later models stopped saving (``position_ids``): ``extra``
    adds them to the .bin file as the real file has them.
    """
    import torch

    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if safetensors:
        from safetensors.torch import save_file

        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if pickled:
        torch.save({**state, **(extra or {})}, folder / "pytorch_model.bin")


def _seed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# -- tokenizers ----------------------------------------------------------------------------------------

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable character table (the base of a byte-level vocabulary)."""
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    characters = visible[:]
    extra = 0
    for byte in range(256):
        if byte not in visible:
            visible.append(byte)
            characters.append(256 + extra)
            extra += 1
    return dict(zip(visible, (chr(c) for c in characters)))


_CLIP_SPLIT = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+", re.UNICODE)


def clip_vocabulary(corpus: list[str], merges: int = 300) -> tuple[dict[str, int], list[str]]:
    """vocab.json and merges.txt in CLIP's own layout: the 256 byte symbols, the same with ``</w>``, one
    entry per merge in merge order, then ``<|startoftext|>`` and ``<|endoftext|>`` as the two last ids
    (49406 and 49407 in the real vocabulary; transformers' CLIP pools at the highest id for these
    checkpoints, whose config says ``eos_token_id: 2``). Merges are learned by plain BPE on ``corpus``."""
    table = _bytes_to_unicode()
    words: Counter = Counter()
    for line in corpus:
        for piece in _CLIP_SPLIT.findall(re.sub(r"\s+", " ", line.lower())):
            symbols = [table[b] for b in piece.encode("utf-8")]
            symbols[-1] += "</w>"
            words[tuple(symbols)] += 1
    learned: list[tuple[str, str]] = []
    for _ in range(merges):
        pairs: Counter = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs.items(), key=lambda item: (item[1], item[0]))[0]
        learned.append(best)
        merged: Counter = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    base = list(table.values())
    tokens = base + [b + "</w>" for b in base] + ["".join(pair) for pair in learned]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, [f"{a} {b}" for a, b in learned]


def _write_clip_tokenizer_files(folder: Path, vocab: dict[str, int], merges: list[str]) -> None:
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def _clip_added_token(content: str) -> dict:
    return {"content": content, "single_word": False, "lstrip": False, "rstrip": False, "normalized": True,
            "__type": "AddedToken"}


def _clip_tokenizer_config(name_or_path: str, max_length: int) -> dict:
    """The tokenizer_config.json of openai/clip-vit-base-patch32 (one JSON line, no tokenizer_class)."""
    return {
        "unk_token": _clip_added_token("<|endoftext|>"),
        "bos_token": _clip_added_token("<|startoftext|>"),
        "eos_token": _clip_added_token("<|endoftext|>"),
        "pad_token": "<|endoftext|>",
        "add_prefix_space": False,
        "errors": "replace",
        "do_lower_case": True,
        "name_or_path": name_or_path,
        "model_max_length": max_length,
    }


def _clip_special_tokens_map() -> dict:
    def token(content):
        return {"content": content, "single_word": False, "lstrip": False, "rstrip": False, "normalized": True}

    return {"bos_token": token("<|startoftext|>"), "eos_token": token("<|endoftext|>"),
            "unk_token": token("<|endoftext|>"), "pad_token": "<|endoftext|>"}


def wordpiece_vocabulary(words: list[str], cjk: list[str], *, cased: bool) -> list[str]:
    """vocab.txt in BERT's layout: [PAD], [unused1..99], [UNK], [CLS], [SEP], [MASK] (ids 0, 1-99, 100-103
    as in bert-base-chinese and the multilingual BERTs), then characters, ``##`` continuations and words."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    if cased:
        letters += [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    characters = PUNCTUATION + [str(d) for d in range(10)] + letters
    characters += sorted({ch for word in cjk for ch in word})
    tokens += characters + ["##" + ch for ch in characters if ch.isalnum()]
    tokens += sorted(set(words) | ({w.capitalize() for w in words} if cased else set()))
    unique: list[str] = []
    for token in tokens:
        if token not in unique:
            unique.append(token)
    return unique


def _bert_tokenizer_json(folder: Path, vocab_file: Path, *, lower: bool, max_length: int | None) -> None:
    """tokenizer.json for a BERT WordPiece vocabulary, as the tokenizers library writes it (BertNormalizer,
    BertPreTokenizer, WordPiece over the whole vocab.txt, ``[CLS] $A [SEP]``). (transformers 5's
    ``BertTokenizer(vocab_file=…)`` ignores the file and saves only the special tokens.)"""
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(str(vocab_file), lowercase=lower, handle_chinese_chars=True,
                                       strip_accents=None if lower else False, clean_text=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    vocabulary = tokenizer.get_vocab()
    assert len(vocabulary) == len(vocab_file.read_text(encoding="utf-8").splitlines()), "tokenizer.json lost words"


def _corpus() -> list[str]:
    english = [" ".join(ENGLISH[i:i + 7]) for i in range(0, len(ENGLISH), 3)]
    chinese = ["".join(CHINESE[i:i + 5]) for i in range(0, len(CHINESE), 2)]
    return english * 3 + chinese


# -- configs in the 2021-2022 transformers layout ---------------------------------------------------------

def _legacy_config_dump(**fields) -> dict:
    """A nested config as transformers 4.x wrote it in full (generation defaults included, such as
    ``max_length: 20``, which is not a text limit)."""
    base = {
        "_name_or_path": "", "add_cross_attention": False, "architectures": None, "bad_words_ids": None,
        "bos_token_id": None, "chunk_size_feed_forward": 0, "cross_attention_hidden_size": None,
        "decoder_start_token_id": None, "diversity_penalty": 0.0, "do_sample": False, "early_stopping": False,
        "encoder_no_repeat_ngram_size": 0, "eos_token_id": None, "finetuning_task": None,
        "forced_bos_token_id": None, "forced_eos_token_id": None,
        "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "is_decoder": False, "is_encoder_decoder": False,
        "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "length_penalty": 1.0, "max_length": 20, "min_length": 0,
        "no_repeat_ngram_size": 0, "num_beam_groups": 1, "num_beams": 1, "num_return_sequences": 1,
        "output_attentions": False, "output_hidden_states": False, "output_scores": False, "pad_token_id": None,
        "prefix": None, "problem_type": None, "pruned_heads": {}, "remove_invalid_values": False,
        "repetition_penalty": 1.0, "return_dict": True, "return_dict_in_generate": False, "sep_token_id": None,
        "task_specific_params": None, "temperature": 1.0, "tie_encoder_decoder": False, "tie_word_embeddings": True,
        "tokenizer_class": None, "top_k": 50, "top_p": 1.0, "torch_dtype": None, "torchscript": False,
        "transformers_version": "4.16.0.dev0", "use_bfloat16": False,
    }
    base.update(fields)
    return dict(sorted(base.items()))


def _clip_config_json(vocab_size: int, *, openai: bool) -> dict:
    """config.json of openai/clip-vit-base-patch32 (``openai=True``) or of clip-ViT-B-32's 0_CLIPModel: the full
    transformers-4 dump of both towers, the text one saying ``bos_token_id: 0, eos_token_id: 2,
    pad_token_id: 1`` (the legacy values: transformers pools these checkpoints at the highest token id).
    openai's adds ``logit_scale_init_value``, ``torch_dtype`` and ``text_config_dict``/``vision_config_dict``
    set to null; the sentence-transformers copy was written by transformers 4.6, which had neither."""
    text = _legacy_config_dump(
        attention_dropout=0.0, bos_token_id=0, dropout=0.0, eos_token_id=2, hidden_act="quick_gelu",
        hidden_size=HIDDEN, initializer_factor=1.0, initializer_range=0.02, intermediate_size=INTERMEDIATE,
        layer_norm_eps=1e-05, max_position_embeddings=CLIP_POSITIONS, model_type="clip_text_model",
        num_attention_heads=HEADS, num_hidden_layers=LAYERS, pad_token_id=1, projection_dim=PROJECTION,
        vocab_size=vocab_size,
    )
    vision = _legacy_config_dump(
        attention_dropout=0.0, dropout=0.0, hidden_act="quick_gelu", hidden_size=HIDDEN, image_size=IMAGE,
        initializer_factor=1.0, initializer_range=0.02, intermediate_size=INTERMEDIATE, layer_norm_eps=1e-05,
        model_type="clip_vision_model", num_attention_heads=HEADS, num_channels=3, num_hidden_layers=LAYERS,
        patch_size=PATCH, projection_dim=PROJECTION,
    )
    config = {"_name_or_path": "openai/clip-vit-base-patch32", "architectures": ["CLIPModel"],
              "initializer_factor": 1.0}
    if openai:
        config["logit_scale_init_value"] = 2.6592
    config.update({"model_type": "clip", "projection_dim": PROJECTION, "text_config": text})
    if openai:
        config.update({"text_config_dict": None, "torch_dtype": "float32"})
    config.update({"transformers_version": None, "vision_config": vision})
    if openai:
        config["vision_config_dict"] = None
    return config


def _clip_preprocessor_config() -> dict:
    """preprocessor_config.json of openai/clip-vit-base-patch32: the old feature-extractor form (plain ints
    for size and crop, no rescale keys)."""
    return {
        "crop_size": IMAGE, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "resample": 3, "size": IMAGE,
    }


def _clip_weights(folder: Path, vocab_size: int, seed: int, *, safetensors: bool) -> None:
    import torch
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                         num_hidden_layers=LAYERS, num_attention_heads=HEADS, max_position_embeddings=CLIP_POSITIONS,
                         bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=PROJECTION),
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
                           num_attention_heads=HEADS, image_size=IMAGE, patch_size=PATCH, projection_dim=PROJECTION),
        projection_dim=PROJECTION,
    )
    _seed(seed)
    model = CLIPModel(config)
    patches = (IMAGE // PATCH) ** 2 + 1
    # The 2021 checkpoints pickled the position_ids buffers (the "torch.LongStorage" in their pickle imports).
    extra = {"text_model.embeddings.position_ids": torch.arange(CLIP_POSITIONS).unsqueeze(0),
             "vision_model.embeddings.position_ids": torch.arange(patches).unsqueeze(0)}
    _save_weights(model, folder, safetensors=safetensors, pickled=True, extra=extra)


# -- 1. sentence-transformers/clip-ViT-B-32 ----------------------------------------------------------------

def write_st_clip(folder: str | os.PathLike, seed: int = 0) -> Replica:
    """sentence-transformers/clip-ViT-B-32 as its main branch has it since "Replace clip model with
    transformers version" (commit afe976e) and "update tokenizer config" (dbd2f22):

        .gitattributes  README.md  config_sentence_transformers.json  modules.json
        0_CLIPModel/ config.json  merges.txt  preprocessor_config.json  pytorch_model.bin
                     special_tokens_map.json  tokenizer_config.json  vocab.json

    No tokenizer.json: the fast tokenizer is built from vocab.json and merges.txt. modules.json names the
    legacy module ``sentence_transformers.models.CLIPModel``; config_sentence_transformers.json is from
    sentence-transformers 2.0.0. The tokenizer config is openai's with ``name_or_path`` set to the Hub id.
    """
    root = Path(folder)
    inner = root / "0_CLIPModel"
    inner.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocabulary(_corpus())
    _write_clip_tokenizer_files(inner, vocab, merges)
    _write_json(inner / "config.json", _clip_config_json(len(vocab), openai=False))
    _write_json(inner / "preprocessor_config.json", _clip_preprocessor_config())
    _write_json(inner / "special_tokens_map.json", _clip_special_tokens_map(), compact=True)
    _write_json(inner / "tokenizer_config.json",
                _clip_tokenizer_config("openai/clip-vit-base-patch32", CLIP_POSITIONS), compact=True)
    _clip_weights(inner, len(vocab), seed, safetensors=False)
    modules = [{"idx": 0, "name": "0", "path": "0_CLIPModel", "type": "sentence_transformers.models.CLIPModel"}]
    _write_json(root / "modules.json", modules, newline=False)
    versions = {"sentence_transformers": "2.0.0", "transformers": "4.6.0", "pytorch": "1.7.1"}
    _write_json(root / "config_sentence_transformers.json", {"__version__": versions}, newline=False)
    _write_readme(root, "sentence-transformers/clip-ViT-B-32")
    return Replica("st-clip", "sentence-transformers/clip-ViT-B-32", root, inner, "CLIPModel", CLIP_POSITIONS)


# -- 2. openai/clip-vit-base-patch32 ------------------------------------------------------------------------

def write_openai_clip(folder: str | os.PathLike, seed: int = 0) -> Replica:
    """openai/clip-vit-base-patch32, main branch:

        .gitattributes  README.md  config.json  flax_model.msgpack  merges.txt  model.safetensors
        preprocessor_config.json  pytorch_model.bin  special_tokens_map.json  tf_model.h5
        tokenizer.json  tokenizer_config.json  vocab.json

    (flax_model.msgpack and tf_model.h5 are left out: no PyTorch loader reads them.) tokenizer_config.json
    is the one-line file without ``tokenizer_class`` and with ``name_or_path: ./clip_ViT_B_32/``.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocabulary(_corpus())
    _write_clip_tokenizer_files(root, vocab, merges)
    _write_json(root / "config.json", _clip_config_json(len(vocab), openai=True))
    _write_json(root / "preprocessor_config.json", _clip_preprocessor_config())
    _write_json(root / "special_tokens_map.json", _clip_special_tokens_map(), compact=True)
    _clip_fast_tokenizer_json(root)
    _write_json(root / "tokenizer_config.json", _clip_tokenizer_config("./clip_ViT_B_32/", CLIP_POSITIONS),
                compact=True)
    _clip_weights(root, len(vocab), seed, safetensors=True)
    _write_readme(root, "openai/clip-vit-base-patch32")
    return Replica("openai-clip", "openai/clip-vit-base-patch32", root, root, "CLIPModel", CLIP_POSITIONS)


def _clip_fast_tokenizer_json(root: Path) -> None:
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = CLIPTokenizer(vocab=json.loads((root / "vocab.json").read_text(encoding="utf-8")),
                                  merges=[tuple(line.split(" ")) for line in
                                          (root / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]],
                                  model_max_length=CLIP_POSITIONS)
        tokenizer.save_pretrained(scratch)
        shutil.copy(Path(scratch) / "tokenizer.json", root / "tokenizer.json")


# -- 3. google/siglip-base-patch16-224 ----------------------------------------------------------------------

def write_siglip(folder: str | os.PathLike, seed: int = 0) -> Replica:
    """google/siglip-base-patch16-224, main branch:

        .gitattributes  README.md  config.json  model.safetensors  preprocessor_config.json
        pytorch_model.bin  special_tokens_map.json  spiece.model  tokenizer_config.json

    config.json gives only a few keys per tower (no ``max_position_embeddings``: 64 by default);
    tokenizer_config.json: SiglipTokenizer, ``model_max_length: 64``, ``pad_token = eos = </s>``,
    ``do_lower_case``, ``model_input_names: [input_ids]`` (no attention mask: the text tower pools the
    last position, so captions must be padded to 64 as the model was trained). spiece.model is a
    tiny SentencePiece unigram model with SigLIP's ids: 0 ``<pad>``, 1 ``</s>``, 2 ``<unk>``.
    """
    from transformers import SiglipConfig, SiglipModel

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    vocab_size = _train_sentencepiece(root / "spiece.model")
    config_json = {
        "architectures": ["SiglipModel"],
        "initializer_factor": 1.0,
        "model_type": "siglip",
        "text_config": {"hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE, "model_type": "siglip_text_model",
                        "num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "vocab_size": vocab_size},
        "torch_dtype": "float32",
        "transformers_version": "4.37.0.dev0",
        "vision_config": {"hidden_size": HIDDEN, "image_size": IMAGE, "intermediate_size": INTERMEDIATE,
                          "model_type": "siglip_vision_model", "num_attention_heads": HEADS,
                          "num_hidden_layers": LAYERS, "patch_size": PATCH},
    }
    _write_json(root / "config.json", config_json)
    _write_json(root / "preprocessor_config.json", {
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor", "image_std": [0.5, 0.5, 0.5],
        "processor_class": "SiglipProcessor", "resample": 3, "rescale_factor": 0.00392156862745098,
        "size": {"height": IMAGE, "width": IMAGE},
    })

    def special(content):
        return {"content": content, "lstrip": True, "normalized": False, "rstrip": True, "single_word": False}

    _write_json(root / "special_tokens_map.json",
                {"eos_token": special("</s>"), "pad_token": special("</s>"), "unk_token": special("<unk>")})
    _write_json(root / "tokenizer_config.json", {
        "added_tokens_decoder": {"1": {**special("</s>"), "special": True}, "2": {**special("<unk>"), "special": True}},
        "additional_special_tokens": [],
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": "</s>",
        "model_input_names": ["input_ids"],
        "model_max_length": SIGLIP_TEXT_LENGTH,
        "pad_token": "</s>",
        "processor_class": "SiglipProcessor",
        "sp_model_kwargs": {},
        "tokenizer_class": "SiglipTokenizer",
        "unk_token": "<unk>",
    })
    config = SiglipConfig.from_pretrained(root)
    _seed(seed)
    model = SiglipModel(config)
    _save_weights(model, root, safetensors=True, pickled=True)
    _write_readme(root, "google/siglip-base-patch16-224")
    return Replica("siglip", "google/siglip-base-patch16-224", root, root, "SiglipModel", SIGLIP_TEXT_LENGTH,
                   padding="max_length")


def _train_sentencepiece(path: Path, vocab_size: int = 320) -> int:
    import sentencepiece as spm

    sentences = _corpus() + [" ".join(ENGLISH)] * 4
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buffer, vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>",
        unk_piece="<unk>", hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )
    path.write_bytes(buffer.getvalue())
    processor = spm.SentencePieceProcessor(model_proto=buffer.getvalue())
    return processor.get_piece_size()


# -- 4. OFA-Sys/chinese-clip-vit-base-patch16 -------------------------------------------------------------

def write_chinese_clip(folder: str | os.PathLike, seed: int = 0) -> Replica:
    """OFA-Sys/chinese-clip-vit-base-patch16, main branch from November 2022 on:

        .gitattributes  README.md  clip_cn_vit-b-16.pt  config.json  festival.jpg
        preprocessor_config.json  pytorch_model.bin  vocab.txt

    No tokenizer_config.json and no special_tokens_map.json: the tokenizer is BertTokenizer on vocab.txt
    with its defaults, so it declares no ``model_max_length`` and truncates nothing; the text tower
    has ``max_position_embeddings`` positions (512 in the real one). (clip_cn_vit-b-16.pt, the original
    project's checkpoint, and the example image are left out: transformers reads neither.)
    preprocessor_config.json: ChineseCLIPFeatureExtractor, no centre crop, ``size`` height/width.
    """
    from transformers import ChineseCLIPConfig, ChineseCLIPModel

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    vocab = wordpiece_vocabulary(ENGLISH, CHINESE, cased=False)
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config_json = {
        "architectures": ["ChineseCLIPModel"],
        "initializer_factor": 1.0,
        "logit_scale_init_value": 2.6592,
        "model_type": "chinese_clip",
        "projection_dim": PROJECTION,
        "text_config": {
            "architectures": ["ChineseCLIPTextModel"], "attention_probs_dropout_prob": 0.1, "bos_token_id": 0,
            "directionality": "bidi", "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": INTERMEDIATE,
            "layer_norm_eps": 1e-12, "max_position_embeddings": CHINESE_CLIP_POSITIONS,
            "model_type": "chinese_clip_text_model", "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
            "output_past": True, "pad_token_id": 0, "pooler_fc_size": HIDDEN, "pooler_num_attention_heads": HEADS,
            "pooler_num_fc_layers": 3, "pooler_size_per_head": 128, "pooler_type": "first_token_transform",
            "type_vocab_size": 2, "vocab_size": len(vocab),
        },
        "torch_dtype": "float32",
        "transformers_version": "4.25.0.dev0",
        "vision_config": {
            "dropout": 0.0, "hidden_size": HIDDEN, "image_size": IMAGE, "intermediate_size": INTERMEDIATE,
            "model_type": "chinese_clip_vision_model", "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
            "patch_size": PATCH, "projection_dim": PROJECTION,
        },
    }
    _write_json(root / "config.json", config_json)
    _write_json(root / "preprocessor_config.json", {
        "do_center_crop": False, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "ChineseCLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "resample": 3, "size": {"height": IMAGE, "width": IMAGE},
    })
    config = ChineseCLIPConfig.from_pretrained(root)
    _seed(seed)
    model = ChineseCLIPModel(config)
    _save_weights(model, root, pickled=True)
    _write_readme(root, "OFA-Sys/chinese-clip-vit-base-patch16")
    return Replica("chinese-clip", "OFA-Sys/chinese-clip-vit-base-patch16", root, root, "ChineseCLIPModel",
                   CHINESE_CLIP_POSITIONS)


# -- 5. sentence-transformers/clip-ViT-B-32-multilingual-v1 -----------------------------------------------

def write_multilingual_text(folder: str | os.PathLike, seed: int = 0, out_features: int = PROJECTION) -> Replica:
    """sentence-transformers/clip-ViT-B-32-multilingual-v1, main branch (commit d27719b and metadata updates):

        .gitattributes  README.md  config.json  config_sentence_transformers.json  modules.json
        pytorch_model.bin  sentence_bert_config.json  special_tokens_map.json  tokenizer.json
        tokenizer_config.json  vocab.txt
        1_Pooling/config.json        (mean pooling; the four pooling_mode_* keys of 2021)
        2_Dense/config.json  2_Dense/pytorch_model.bin   (768 → 512, no bias, Identity activation)

    The Transformer module is the repository root (modules.json path ``""``), not a 0_Transformer folder.
    DistilBERT (multilingual cased vocabulary, ``do_lower_case: false``); sentence_bert_config.json
    ``max_seq_length`` below the position count, as the real 128 of 512. The Dense layer maps into
    ``out_features`` (the CLIP replicas' embedding size), as the real one maps into clip-ViT-B-32's space.
    """
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    vocab = wordpiece_vocabulary(ENGLISH, CHINESE, cased=True)
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    _write_json(root / "config.json", {
        "_name_or_path": "old_models/clip-ViT-B-32-multilingual-v1/0_Transformer", "activation": "gelu",
        "architectures": ["DistilBertModel"], "attention_dropout": 0.1, "dim": HIDDEN, "dropout": 0.1,
        "hidden_dim": INTERMEDIATE, "initializer_range": 0.02, "max_position_embeddings": MULTILINGUAL_POSITIONS,
        "model_type": "distilbert", "n_heads": HEADS, "n_layers": LAYERS, "output_past": True, "pad_token_id": 0,
        "qa_dropout": 0.1, "seq_classif_dropout": 0.2, "sinusoidal_pos_embds": False, "tie_weights_": True,
        "transformers_version": "4.7.0", "vocab_size": len(vocab),
    })
    _write_json(root / "sentence_bert_config.json", {"max_seq_length": MULTILINGUAL_MAX_SEQ, "do_lower_case": False},
                newline=False)
    _write_json(root / "special_tokens_map.json", {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                                                   "cls_token": "[CLS]", "mask_token": "[MASK]"}, compact=True)
    _bert_tokenizer_json(root, root / "vocab.txt", lower=False, max_length=MULTILINGUAL_POSITIONS)
    _write_json(root / "tokenizer_config.json", {
        "do_lower_case": False, "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
        "cls_token": "[CLS]", "mask_token": "[MASK]", "tokenize_chinese_chars": True, "strip_accents": None,
        "model_max_length": MULTILINGUAL_POSITIONS, "special_tokens_map_file": None,
        "name_or_path": "old_models/clip-ViT-B-32-multilingual-v1/0_Transformer", "do_basic_tokenize": True,
        "never_split": None,
    }, compact=True)
    config = DistilBertConfig.from_pretrained(root)
    _seed(seed)
    model = DistilBertModel(config)
    _save_weights(model, root, pickled=True)
    _write_json(root / "1_Pooling" / "config.json", {
        "word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
    }, newline=False)
    _write_json(root / "2_Dense" / "config.json", {"in_features": HIDDEN, "out_features": out_features, "bias": False,
                                                    "activation_function": "torch.nn.modules.linear.Identity"},
                compact=True)
    generator = torch.Generator().manual_seed(seed + 1)
    dense = torch.randn(out_features, HIDDEN, generator=generator) / HIDDEN ** 0.5
    torch.save({"linear.weight": dense}, root / "2_Dense" / "pytorch_model.bin")
    _write_json(root / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ], newline=False)
    versions = {"sentence_transformers": "2.0.0", "transformers": "4.7.0", "pytorch": "1.9.0+cu102"}
    _write_json(root / "config_sentence_transformers.json", {"__version__": versions}, newline=False)
    _write_readme(root, "sentence-transformers/clip-ViT-B-32-multilingual-v1")
    return Replica("multilingual-text", "sentence-transformers/clip-ViT-B-32-multilingual-v1", root, None, None,
                   MULTILINGUAL_MAX_SEQ, modalities=("text",))


def _write_readme(root: Path, repo: str) -> None:
    (root / "README.md").write_text(f"# Tiny random-weight replica of {repo}\n\nFor tests only.\n", encoding="utf-8")
    (root / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n"
                                         "*.safetensors filter=lfs diff=lfs merge=lfs -text\n", encoding="utf-8")


WRITERS = {
    "st-clip": write_st_clip,
    "openai-clip": write_openai_clip,
    "siglip": write_siglip,
    "chinese-clip": write_chinese_clip,
    "multilingual-text": write_multilingual_text,
}


def write_text_model_pair(root: Path) -> tuple[Path, Path, Path]:
    """The CLIP replica, its multilingual text student, and 12 sample rows under ``root``: (clip, student, data)."""
    from mmindex.pipeline.ingest.sample import write_sample

    clip = write_st_clip(root / "clip-ViT-B-32")
    student = write_multilingual_text(root / "clip-ViT-B-32-multilingual-v1")
    data = root / "data"
    write_sample(data, rows=12, seed=3)
    return clip.path, student.path, data
