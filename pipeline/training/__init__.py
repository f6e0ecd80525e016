"""Learning and evaluation: retrieval metrics exactly and through a collection (``evaluate``), contrastive
fine-tuning (``train``), and fresh small CLIPs built offline (``scratch``).
"""
