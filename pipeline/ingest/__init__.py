"""Ingest: Parquet rows in, one point per row out.

``job`` (the whole run: checks before the model loads, engine, graceful stop, report, exit code; ``options`` holds
what the run is told) → ``run`` (the
ingest loop and its change checks) over ``source`` (files → record batches, via ``schema``) → ``rows`` (id, caption
and payload checks) → ``images`` / ``gpu_decode`` (bytes → pixels) → ``stages`` (decode, embed and write running
at once) → ``records`` (ids, hashes, payload); ``sync`` keeps a collection equal to its source; ``summary`` counts
every row; ``ray`` runs the same stages on a cluster; ``signals`` stops gracefully; ``sample`` writes demo data.
"""
