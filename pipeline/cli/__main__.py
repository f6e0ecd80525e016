"""``python -m mmindex.pipeline.cli``: the same command as ``mmindex`` (and ``python -m mmindex``)."""
from mmindex.pipeline.cli import main

main()
