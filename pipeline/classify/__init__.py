"""Predicted labels written into payloads: zero-shot labels from a collection's own text model (``zero_shot.py``),
the labels file and prompt templates (``labels_file.py``), and the writer every labeler shares
(``predictions.py``: ``Labeler``, ``label_collection``, ``label_fields``)."""
