"""Duplicates: the signals ingest keeps per image (``signals``), the tier of two images and its evidence
(``evidence``), and the groups in a whole collection (``find``).
"""
