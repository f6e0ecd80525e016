"""``python -m mmindex`` runs the ``mmindex`` command."""
from mmindex.pipeline.cli import main

if __name__ == "__main__":
    main()
