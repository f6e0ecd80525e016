"""The transformers reference a replica's vectors are checked against (tests/models/test_model_replicas.py,
tests/models/test_quick_query.py)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from helpers import replicas


class Reference:
    """The model family's documented transformers path: its processor and ``get_*_features``, one item at a
    time, L2-normalised (SigLIP's docs pad to ``max_length``; CLIP's and Chinese-CLIP's pad to the longest)."""

    def __init__(self, replica: replicas.Replica):
        import transformers
        from transformers import AutoProcessor

        self.replica = replica
        model_class = getattr(transformers, replica.model_class)
        self.model = model_class.from_pretrained(replica.transformers_path).eval()
        self.processor = AutoProcessor.from_pretrained(replica.transformers_path)
        self.tokenizer = self.processor.tokenizer

    def text(self, caption: str, truncate: bool = False) -> np.ndarray:
        kwargs = {"padding": self.replica.padding}
        if truncate:
            kwargs.update(truncation=True, max_length=self.replica.text_limit)
        inputs = self.processor(text=[caption], return_tensors="pt", **kwargs)
        return self._features(self.model.get_text_features, inputs)

    def image(self, image: Image.Image) -> np.ndarray:
        return self._features(self.model.get_image_features, self.processor(images=[image], return_tensors="pt"))

    def token_count(self, text: str) -> int:
        """Tokens the model's own tokenizer makes of ``text``, special tokens included, nothing cut."""
        return len(self.tokenizer(text, truncation=False)["input_ids"])

    @staticmethod
    def _features(method, inputs) -> np.ndarray:
        import torch

        with torch.inference_mode():
            output = method(**inputs)
        vector = getattr(output, "pooler_output", output)
        return torch.nn.functional.normalize(vector.float(), dim=-1)[0].numpy()
