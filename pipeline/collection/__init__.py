"""A collection as a whole: its description (``info``), deleting points on purpose (``delete``), copying it to another
store (``copy``) and the aliases that point to it (``aliases``).
"""
