"""Run after `python bench/peers.py` (which prepares bench/.cache). Text tower, in one process: run_tower on bench/peers.py's 192 captions in batches of 64, padded to the batch's
longest (padding=None: as before) against sorted by length in chunks of 16 (padding="longest"), interleaved."""
import glob, os, statistics, time
from pathlib import Path
import numpy as np, pyarrow.parquet as pq
from mmindex.pipeline.models.onnx_model import open_session, run_tower
from mmindex.pipeline.models.quick import load_tokenizer, text_features, read_json
root = str(Path(__file__).resolve().parents[1] / ".cache") + "/"  # bench/.cache, as bench/peers.py prepares it
folder = glob.glob(root + "mmindex/onnx/*/fp32")[0]
bundle = read_json(os.path.join(folder, "query.json"))
tok = load_tokenizer(Path(folder) / "tokenizer.json", bundle["text"]["settings"])
caps = pq.read_table(root + "sample-192-640x480-1-0/part-00000.parquet", columns=["caption"]).column(0).to_pylist()
session = open_session(Path(folder) / "text.onnx", None, ["CPUExecutionProvider"])
batches = [text_features(tok, caps[i:i + 64], ["input_ids", "attention_mask"]) for i in range(0, len(caps), 64)]
lengths = np.concatenate([b["attention_mask"].sum(1) for b in batches])
print(f"{len(caps)} captions, tokens min {lengths.min()} median {np.median(lengths):.0f} max {lengths.max()}; load {os.getloadavg()[0]:.2f}")
times = {None: [], "longest": []}
for _ in range(5):
    for padding in (None, "longest"):
        t = time.perf_counter()
        out = np.concatenate([run_tower(session, b, "text", "fp32", padding=padding) for b in batches])
        times[padding].append(time.perf_counter() - t)
        if padding is None: ref = out
        else: gap = float(np.abs(out - ref).max())
for padding, ts in times.items():
    print(f"{'padded batches of 64' if padding is None else 'sorted, chunks of 16'}: median {statistics.median(ts):.2f} s (min {min(ts):.2f}, max {max(ts):.2f}, 5 runs)")
print(f"largest coordinate difference between the two: {gap:.1e}; load {os.getloadavg()[0]:.2f}")
