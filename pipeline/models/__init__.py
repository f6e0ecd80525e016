"""Models: which model a collection loads (``identity``), the ``Encoder`` that turns images and captions into
vectors (``encoder``), the ``Backend`` interface each model library implements (``backend``: ``st_model``,
``onnx_model``, ``open_clip_model``), and the torch-free query path (``bundle`` writes, ``quick`` reads).
"""
