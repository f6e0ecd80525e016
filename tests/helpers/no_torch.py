"""A fresh process where torch, transformers and sentence-transformers cannot be imported (an ImportError saying
"blocked in this test"), for the tests of what runs without them."""
from __future__ import annotations

import subprocess
import sys

BLOCK = """
import sys
BANNED = ("torch", "transformers", "sentence_transformers")

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BANNED:
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, Block())
"""


def run_cli_without_torch(args: list[str], env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    """``mmindex ARGS`` in such a process; its exit code, stdout and stderr."""
    script = BLOCK + "from mmindex.pipeline.cli import main\nmain(sys.argv[1:])\n"
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
