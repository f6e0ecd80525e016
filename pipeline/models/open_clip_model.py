"""open_clip models as an mmindex backend: LAION / DataComp / DFN checkpoints through ``open_clip_torch``.

Three spellings of ``--model``, each handed to open_clip exactly as its own docs write them:
- ``open_clip:ARCH/TAG`` → ``create_model_and_transforms(ARCH, pretrained=TAG)`` (e.g. ``ViT-B-32/laion2b_s34b_b79k``);
- ``open_clip:ARCH/PATH`` → the same with a checkpoint file (``.pt``/``.pth``/``.bin``/``.safetensors``), such as
  open_clip's training output ``epoch_32.pt``;
- ``hf-hub:ORG/NAME`` (open_clip's own scheme), or a local folder in that Hub layout (``open_clip_config.json`` with
  ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``), also spelt ``local-dir:FOLDER``.
open_clip is imported only when such a model is asked for; it needs torchvision, which is why it is an extra.
"""
from __future__ import annotations

import copy
import difflib
import logging
import os
import threading
from typing import Any, Sequence

import numpy as np

from mmindex.errors import ModelError
from mmindex.pipeline.models.backend import TextRule
from mmindex.pipeline.models.identity import CONFIG_NAME, HUB_PREFIX, LOCAL_PREFIX, OpenClipSpec, parse_spec
from mmindex.pipeline.models.trust import check_model_trust

INSTALL_HINT = ("pip install 'mmindex[openclip]' (it installs open_clip_torch and torchvision; torchvision must be the "
                "build made for your torch version, e.g. torch 2.14.1 with torchvision 0.29.1)")


def import_open_clip():
    """open_clip, or a ModelError saying how to install it (it needs a torchvision matching torch)."""
    try:
        # the openclip extra: loaded only for an open_clip model
        import open_clip
    except ModuleNotFoundError as error:
        if error.name not in ("open_clip", "torchvision"):
            raise ModelError(f"open_clip cannot be imported: it needs {error.name!r}, which is not installed. "
                             f"{INSTALL_HINT}") from error
        raise ModelError(f"open_clip models need the open_clip_torch package (and torchvision), which is not "
                         f"installed: {INSTALL_HINT}") from error
    except Exception as error:  # e.g. a torchvision built for another torch: "operator torchvision::nms does not exist"
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        raise ModelError(
            f"open_clip is installed but cannot be imported ({type(error).__name__}: {error}). This is usually a "
            f"torchvision built for another torch (torch here is {torch.__version__}); {INSTALL_HINT}"
        ) from error
    return open_clip


class OpenClipModel:
    """An open_clip model (``create_model_and_transforms`` + ``get_tokenizer``) behind the ``Backend`` interface.

    Captions go through open_clip's own tokenizer, which pads every text to the model's context
    length and cuts longer ones (the end token kept); images through open_clip's own validation
    transform (resize, centre crop, normalise as the checkpoint's ``preprocess_cfg`` says).
    """

    kind = "open_clip"
    modalities = frozenset({"image", "text"})

    def __init__(self, spec: str, device: str, half: bool = False, trust_code: bool = False):
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        self.spec = parse_spec(spec)
        self.device = device
        check_model_trust(spec, trust_code)  # a pickle checkpoint holding more than tensors, code in the folder
        open_clip = import_open_clip()
        _check_can_load(open_clip, self.spec, spec)
        self.module, self.transform, self.tokenizer = _load(open_clip, self.spec, spec, device, half)
        self.module.eval()
        # open_clip's fp16 keeps some weights (layer norms, embeddings) in fp32 and expects fp16 pixels.
        self._input_dtype = torch.float16 if half else torch.float32
        self.image_size = _square_side(getattr(self.module.visual, "image_size", None))
        # open_clip's resize modes: "shortest" (resize, then centre crop: CLIP's way), "longest" (pad), "squash".
        resize_mode = (getattr(self.module.visual, "preprocess_cfg", None) or {}).get("resize_mode", "shortest")
        self.center_crop = resize_mode == "shortest"
        context_length = int(self.tokenizer.context_length)
        self.text_rule = TextRule(context_length, "max_length", "open_clip tokenizer context_length")
        self._count_tokens = _token_counter(self.tokenizer)
        # open_clip's Hugging Face tokenizers (SigLIP, XLM-R, mT5 towers) keep padding/truncation settings in
        # shared state; one lock for every tokenizer call, whichever kind (shared by replicas: same tokenizer).
        self._text_lock = threading.Lock()
        self.dim = self._output_dim()

    def _output_dim(self) -> int:
        dim = getattr(self.module.visual, "output_dim", None)
        if dim:
            return int(dim)
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        with torch.inference_mode():  # a timm tower does not say; one short caption does
            ids = self.preprocess_texts(["a"])["input_ids"].to(self._module_device())
            return int(self.module.encode_text(ids).shape[-1])

    def _module_device(self):
        return next(self.module.parameters()).device

    def preprocess_images(self, images: Sequence[Any]) -> dict[str, Any]:
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        tensors = [self.transform(image) for image in images]  # torchvision's eval transforms keep no state
        if not tensors:
            side = self.image_size or 1
            return {"pixel_values": torch.zeros((0, 3, side, side))}
        return {"pixel_values": torch.stack(tensors)}

    def preprocess_texts(self, texts: Sequence[str]) -> dict[str, Any]:
        with self._text_lock:
            return {"input_ids": self.tokenizer(list(texts))}

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        with self._text_lock:
            return self._count_tokens(list(texts))

    def embed(self, features: dict[str, Any], modality: str) -> Any:
        if modality == "text":
            return self.module.encode_text(features["input_ids"])
        return self.module.encode_image(features["pixel_values"].to(dtype=self._input_dtype))

    def reference(self, items: Sequence[Any], modality: str) -> np.ndarray | None:
        """open_clip's README path, one item at a time: ``preprocess(image).unsqueeze(0)`` → ``encode_image``,
        ``tokenizer([text])`` → ``encode_text``; L2-normalised."""
        # torch takes seconds to import: only code that runs a model loads it
        import torch

        device = self._module_device()
        rows = []
        with torch.no_grad():
            for item in items:
                if modality == "text":
                    with self._text_lock:
                        tokens = self.tokenizer([item])
                    vector = self.module.encode_text(tokens.to(device))
                else:
                    pixels = self.transform(item).unsqueeze(0).to(device, dtype=self._input_dtype)
                    vector = self.module.encode_image(pixels)
                rows.append(torch.nn.functional.normalize(vector.float(), dim=-1).cpu().numpy())
        return np.concatenate(rows) if rows else None

    def replica(self, device: str) -> "OpenClipModel":
        """The same model on another device (the tokenizer, transform and lock are shared)."""
        twin = copy.copy(self)
        twin.device = device
        twin.module = copy.deepcopy(self.module).to(device)
        return twin


def _check_can_load(open_clip, spec: OpenClipSpec, given: str) -> None:
    """Refuse, with the reason, what open_clip would fail on obscurely or load as random weights."""
    if spec.local_path is not None and not os.path.exists(spec.local_path):
        what = "checkpoint file" if spec.is_checkpoint else "folder"
        raise ModelError(f"model {given!r}: the {what} {spec.local_path} does not exist")
    if spec.local_path is not None and not spec.is_checkpoint:
        if not os.path.isfile(os.path.join(spec.local_path, CONFIG_NAME)):
            raise ModelError(f"model {given!r}: {spec.local_path} has no {CONFIG_NAME}, so it is not an open_clip "
                             "folder in the Hub layout (open_clip_config.json + open_clip_model.safetensors)")
        weights = [name for name in os.listdir(spec.local_path) if name.endswith((".safetensors", ".bin", ".pth"))]
        if not weights:
            raise ModelError(f"model {given!r}: {spec.local_path} has {CONFIG_NAME} but no weights "
                             "(open_clip_model.safetensors or open_clip_pytorch_model.bin)")
    if spec.model_name.startswith((HUB_PREFIX, LOCAL_PREFIX)):
        return
    architecture = spec.model_name.replace("/", "-")
    known = open_clip.list_models()
    if architecture not in known:
        close = difflib.get_close_matches(architecture, known, n=4, cutoff=0.6)
        raise ModelError(
            f"model {given!r}: {architecture!r} is not an open_clip architecture"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
            + "; open_clip.list_models() lists them"
        )
    if spec.is_checkpoint:
        return
    # the openclip extra: loaded only for an open_clip model
    from open_clip.pretrained import get_pretrained_cfg

    pretrained = get_pretrained_cfg(architecture, spec.pretrained)
    if not pretrained:
        tags = open_clip.list_pretrained_tags_by_model(architecture)
        raise ModelError(
            f"model {given!r}: {spec.pretrained!r} is neither a pretrained tag of {architecture} nor a checkpoint "
            f"file; its tags: {', '.join(tags) if tags else 'none (pass a checkpoint file)'}"
        )
    # open_clip only warns when a tag trained with QuickGELU is loaded into a plain-GELU architecture (or the
    # reverse), and the vectors are then wrong: `ViT-B-32/openai` must be spelt `ViT-B-32-quickgelu/openai`.
    wants = bool(pretrained.get("quick_gelu", False))
    has = bool((open_clip.get_model_config(architecture) or {}).get("quick_gelu", False))
    if wants != has:
        fix = f"{architecture}-quickgelu" if wants else architecture.removesuffix("-quickgelu")
        spelling = f" Use open_clip:{fix}/{spec.pretrained}." if fix in known else ""
        raise ModelError(
            f"model {given!r}: the {spec.pretrained!r} weights were trained with{'' if wants else 'out'} QuickGELU, "
            f"but {architecture} is built with{'out' if wants else ''} it; open_clip would load them and embed "
            f"wrongly.{spelling}"
        )


def _load(open_clip, spec: OpenClipSpec, given: str, device: str, half: bool):
    """open_clip's model, validation transform and tokenizer, or a ModelError naming what failed."""
    hidden = logging.root.manager.disable
    # open_clip logs its failures on the root logger before raising; the ModelError below says it once.
    logging.disable(max(hidden, logging.ERROR))
    try:
        model, _, transform = open_clip.create_model_and_transforms(
            spec.model_name, pretrained=spec.pretrained, precision="fp16" if half else "fp32", device=device,
            require_pretrained=True,  # never a randomly initialised model because the weights were not found
        )
        tokenizer = open_clip.get_tokenizer(spec.model_name)
    except Exception as error:
        hint = ""
        if spec.is_checkpoint:
            hint = (f" Is {os.path.basename(spec.local_path)} a checkpoint of architecture {spec.model_name!r}? Its "
                    "weights must fit that architecture (open_clip.list_models() names them).")
        if spec.local_path is None:
            # loaded with the model libraries, only when a model is looked up
            from huggingface_hub import constants

            hint = (" The weights come from the Hugging Face Hub"
                    + (" — but HF_HUB_OFFLINE=1 is set and they are not in the local cache."
                       if constants.HF_HUB_OFFLINE else " (is the network reachable, and the name right?).")
                    + " To work offline, pass a local folder in the Hub layout (open_clip_config.json + "
                      "open_clip_model.safetensors) or open_clip:ARCH/path/to/checkpoint.pt.")
        raise ModelError(f"cannot load open_clip model {given!r}: {type(error).__name__}: {error}.{hint}") from error
    finally:
        logging.disable(hidden)
    return model, transform, tokenizer


def _token_counter(tokenizer):
    """A function counting each text's tokens before truncation, special tokens included, the way ``tokenizer`` does."""
    # the openclip extra: loaded only for an open_clip model
    from open_clip.tokenizer import HFTokenizer, SigLipTokenizer, SimpleTokenizer, basic_clean, canonicalize_text

    if isinstance(tokenizer, SimpleTokenizer):  # start + BPE tokens + end
        return lambda texts: [len(tokenizer.encode(text)) + 2 for text in texts]
    if isinstance(tokenizer, HFTokenizer):
        inner, clean = tokenizer.tokenizer, tokenizer.clean_fn
        if tokenizer.tokenizer_mode == "clips":  # bos + tokens + eos, then a class token at the end
            return lambda texts: [len(ids) + 3 for ids in inner([clean(t) for t in texts], add_special_tokens=False,
                                                                truncation=False)["input_ids"]]
        return lambda texts: [len(ids) for ids in inner([clean(t) for t in texts], truncation=False)["input_ids"]]
    if isinstance(tokenizer, SigLipTokenizer):
        inner = tokenizer.tokenizer
        return lambda texts: [len(ids) for ids in
                              inner([canonicalize_text(basic_clean(t)) for t in texts], truncation=False)["input_ids"]]

    def count_non_padding(texts):  # another tokenizer: tokenize without a practical limit, count non-zero ids
        ids = tokenizer(texts, context_length=100_000)
        return [int((row != 0).sum()) for row in ids]

    return count_non_padding


def _square_side(size) -> int | None:
    if size is None:
        return None
    if isinstance(size, (tuple, list)):
        return int(max(size))
    return int(size)
