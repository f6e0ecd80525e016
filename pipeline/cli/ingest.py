"""``mmindex ingest`` (Parquet in, points out) and ``mmindex sample`` (synthetic data to try it on)."""
from __future__ import annotations

import json
import os
import sys

import click

from mmindex.pipeline.cli.classify import given_label_field, ingest_labelers, probe_labelers
from mmindex.pipeline.cli.format import SectionedCommand
from mmindex.errors import UsageError
from mmindex.pipeline.cli.options import (column_options, command_line_only, device_option, friendly_errors,
                                          image_root_path, inference_options, progress_interval_option, split_values,
                                          store_options)
from mmindex.pipeline.cli.progress import open_progress
from mmindex.pipeline.ingest.job import IngestJob, run_ingest_job
from mmindex.pipeline.ingest.options import DEFAULT_MAX_DELETE, IngestOptions, parse_max_delete
from mmindex.pipeline.ingest.ray import RayOptions
from mmindex.pipeline.ingest.sample import write_sample
from mmindex.pipeline.ingest.source import parse_shard
from mmindex.pipeline.models.identity import ModelChoice

INGEST_SECTIONS = [
    ("Input, model and collection", ["collection", "model", "text_model", "trust_model_code", "image_col", "caption_col", "id_col", "split", "payload_cols",
                                     "index_fields", "text_fields", "image_root", "thumbnails", "labels_path",
                                     "label_templates", "label_field", "label_top_k", "probe_path", "data_dir",
                                     "url"]),
    ("Keeping the collection in sync", ["sync", "source_name", "max_delete", "dry_run", "on_duplicate"]),
    ("Reliability", ["missing_caption", "max_pixels", "max_payload_bytes", "skip_bad_files", "rejects", "no_rejects",
                     "max_reject_rate", "report"]),
    ("Throughput", ["device", "backend", "model_precision", "model_threads", "devices", "decode", "batch_size", "workers", "no_pipeline", "parallel_writes", "bulk_load",
                    "no_optimize", "shard_spec", "engine", "ray_address", "ray_actors", "ray_gpus_per_actor"]),
    ("Output", ["as_json", "quiet", "progress_interval", "print_config"]),
    ("Server connection and collection layout (Qdrant server or cluster)",
     ["api_key", "ca_cert", "timeout", "prefer_grpc", "retries", "retry_wait", "shard_number", "replication_factor",
      "write_consistency_factor", "on_disk", "quantization", "hnsw_m", "hnsw_ef_construct"]),
]


@click.command(cls=SectionedCommand, sections=INGEST_SECTIONS)
@click.argument("inputs", nargs=-1, required=True)
@store_options(layout=True)
@click.option("--model", "-m", default=None,
              help="CLIP-style model: a sentence-transformers or transformers Hub id or local folder (CLIP, SigLIP, "
                   "Chinese-CLIP), or an open_clip model (open_clip:ARCH/TAG, hf-hub:ORG/NAME, a local open_clip "
                   "folder). Default: the model the collection was built with, else clip-ViT-B-32.")
@click.option("--text-model", default=None,
              help="A text model trained into --model's space (e.g. sentence-transformers/clip-ViT-B-32-multilingual-"
                   "v1 beside clip-ViT-B-32): it embeds captions and text queries; recorded in the collection, so "
                   "query, serve and eval use it. Default: the collection's, else --model embeds text too.")
@device_option("run the model")
@inference_options
@click.option("--devices", default=None,
              help="Several devices, one model replica each, fed by one decode pool: e.g. cuda:0,cuda:1.")
@click.option("--decode", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "gpu"]),
              envvar="MMINDEX_DECODE",
              help="Who decodes JPEGs: cpu (Pillow, in the workers) or gpu (torchvision on the model's GPU; pip "
                   "install 'mmindex[gpu]'). auto: gpu when the model runs on CUDA and torchvision imports.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1),
              help="Rows per forward pass (halved automatically after a CUDA out-of-memory error).")
@click.option("--workers", default=os.cpu_count() or 1, show_default=True, type=click.IntRange(1),
              help="Threads that decode and preprocess images while the model runs.")
@click.option("--no-pipeline", is_flag=True,
              help="Run the stages one after another in one thread (the reference path; slower).")
@click.option("--parallel-writes", default=4, show_default=True, type=click.IntRange(1),
              help="Server: upsert requests in flight at once.")
@click.option("--bulk-load", is_flag=True,
              help="Server: defer HNSW index building during this load and restore it at the end.")
@column_options
@click.option("--payload-cols", multiple=True, help="Comma-separated payload columns (default: every other column).")
@click.option("--index-fields", multiple=True,
              help="Comma-separated payload fields to index for fast filtering, as NAME or NAME:TYPE.")
@click.option("--text-fields", multiple=True, metavar="A,B,…",
              help="Payload fields whose text joins the caption in the keyword (BM25) vector, e.g. title,tags "
                   "(strings or lists of strings; nested as --where names them). Default: the collection's.")
@click.option("--max-pixels", default=89_478_485, show_default=True, type=click.IntRange(1),
              help="Reject images with more pixels than this (decompression bombs).")
@click.option("--image-root", default=None,
              help="Folder that image paths must stay inside; relative paths resolve against it. Paths "
                   "leading outside it (.., absolute paths, links) are rejected. Default: paths resolve "
                   "against each Parquet file's folder, unconfined.")
@click.option("--missing-caption", type=click.Choice(["image-only", "reject"]), default="image-only",
              show_default=True, help="Rows with a null or empty caption: store the image vector only, or reject.")
@click.option("--max-payload-bytes", default=1024 * 1024, show_default=True, type=click.IntRange(1024),
              help="Reject rows whose payload (other columns, caption) is larger than this as JSON.")
@click.option("--skip-bad-files", is_flag=True,
              help="Report unreadable or mismatched Parquet files (their rows as rejected) and go on, "
                   "instead of stopping at the first.")
@click.option("--no-optimize", is_flag=True, help="Skip building the vector index at the end (embedded store).")
@click.option("--thumbnails", default=0, show_default=True, type=click.IntRange(0, 512), metavar="PX",
              help="Store a JPEG thumbnail of PX pixels (e.g. 128, ~4 KB) in each payload, for `mmindex serve`'s page.")
@click.option("--rejects", default=None, type=click.Path(dir_okay=False),
              help="Parquet file for rejected rows (file, row, id, stage, reason). Default: rejects.parquet in "
                   "the collection's folder (embedded store) or ./mmindex-rejects-COLLECTION.parquet (server).")
@click.option("--no-rejects", is_flag=True, help="Do not write a rejects file.")
@click.option("--report", default=None, type=click.Path(dir_okay=False),
              help="Also write the run summary as JSON to this file (status, counts, rejections, timings).")
@click.option("--max-reject-rate", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="Exit with code 3 if more than this fraction of the rows read was rejected (and then --sync "
                   "deletes nothing).")
@click.option("--shard", "shard_spec", default=None, metavar="I/N",
              help="Take only part I of N of the input (0-based; split by file and row group), so N workers "
                   "(an Indexed Job, a Slurm array) together ingest every row exactly once. auto/N takes I "
                   "from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: threads in this process. ray: the same stages on a Ray cluster (mmindex[ray]).")
@click.option("--ray-address", default=None,
              help="Ray cluster to join (ray://host:10001 or auto); default: start a local Ray.")
@click.option("--ray-actors", default=None, type=click.IntRange(1),
              help="Ray: most embedding actors (the pool scales from 1 up to this; default: GPUs, or 1).")
@click.option("--ray-gpus-per-actor", default=None, type=click.FloatRange(0),
              help="Ray: GPUs per embedding actor (default 1 when the cluster has GPUs, else 0).")
@click.option("--sync", is_flag=True,
              help="Make the collection equal to INPUTS: after a complete run, delete this source's points whose "
                   "rows are gone (a run with unreadable files deletes nothing).")
@click.option("--max-delete", default=DEFAULT_MAX_DELETE, show_default=True, metavar="N%|N|all",
              callback=lambda ctx, param, value: _delete_limit(value),
              help="Most of the source's points one --sync may delete: a share (10%), a count (500) or all. A sync "
                   "that would delete more deletes nothing and exits with 1, so an input that is empty today, a glob "
                   "that matches fewer files or another --id-col cannot empty the collection. Typed each time: never "
                   "taken from MMINDEX_* or mmindex.toml.")
@click.option("--source", "source_name", default=None, metavar="NAME",
              help="Name of this source in the collection (recorded in _source.name; --sync deletes only its "
                   "points). Default: the inputs, as absolute paths.")
@click.option("--dry-run", is_flag=True,
              help="Read and compare only: count the rows that would be embedded, the payloads that would be "
                   "updated and the points that would be deleted; write nothing.")
@click.option("--on-duplicate", type=click.Choice(["keep", "skip", "link"]), default="keep", show_default=True,
              help="Rows that are exact or near duplicates (the same photo resized, recompressed, cropped, "
                   "recoloured, captioned, mirrored) of a stored point or an earlier row: keep them; skip them "
                   "(counted, and listed in the rejects file with the id they duplicate); or link them (stored "
                   "with duplicate_of and duplicate_tier). Not with --sync. E.g. --on-duplicate skip.")
@click.option("--labels", "labels_path", default=None, type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Zero-shot labels from this labels file (one per line) written with each embedded point, as "
                   "`mmindex label` writes them: e.g. --labels animals.txt (then --where \"label = cat\").")
@click.option("--template", "label_templates", multiple=True, metavar="TEXT",
              help="With --labels: prompt template, {} where the label goes; repeat to average several. E.g. "
                   "--template \"a photo of a {}.\"")
@click.option("--label-field", default="label", show_default=True,
              help="With --labels (or --probe alone, instead of the field it was trained for): the payload field "
                   "to write (and FIELD_score, FIELD_top, FIELD_top_scores). E.g. --label-field animal.")
@click.option("--label-top-k", default=3, show_default=True, type=click.IntRange(1),
              help="With --labels or --probe: labels kept in FIELD_top, best first. E.g. --label-top-k 5.")
@click.option("--probe", "probe_path", default=None, type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="A linear probe saved by `mmindex train --task classify`: its prediction written with each "
                   "embedded point, in the field it was trained for. E.g. --probe shape-probe.json.")
@click.option("--print-config", is_flag=True,
              help="Check the options and print the resolved settings as JSON; read, load and write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, progress lines or notes.")
@progress_interval_option
@friendly_errors
def ingest(inputs, store, model, text_model, device, backend, model_precision, model_threads, devices, decode,
           batch_size, workers, no_pipeline, parallel_writes, bulk_load, image_col, caption_col, id_col, split, payload_cols,
           index_fields, max_pixels, image_root, missing_caption, max_payload_bytes, skip_bad_files, no_optimize,
           thumbnails, rejects, no_rejects, report, max_reject_rate, shard_spec, engine, ray_address, ray_actors,
           ray_gpus_per_actor, sync, max_delete, source_name, dry_run, print_config, as_json, quiet,
           progress_interval, text_fields, on_duplicate, labels_path, label_templates, label_field, label_top_k,
           probe_path):
    """Embed images and captions from Parquet INPUTS and upsert one point per row.

    INPUTS are Parquet files, directories, globs or object-store URIs (s3://, gs://, …), or
    Hugging Face datasets folders (save_to_disk, a DatasetDict with --split, the Hub's
    Parquet layout) and Hub names in the local cache (docs/ingest-and-columns.md).
    Each row becomes a point with named vectors `image` and `text` and the other columns
    as payload. Point ids are deterministic, so re-running never duplicates, and rows
    whose image, caption and model are unchanged are not embedded again: a run that was
    killed resumes by running the same command again.

    Every row read is counted once: upserted, payload updated (same content, other payload:
    vectors kept), unchanged, or rejected with a stage (read, decode, embed) and a reason, kept in
    the rejects file.

    Scheduled runs: points record their source (--source, default the inputs); --sync then
    deletes the source's points whose rows are gone, so the collection equals its inputs.
    --dry-run says what a run would embed, update and delete. SIGTERM or Ctrl-C finishes the batches
    in flight, writes them, prints the summary and exits; a second one stops at once.

    Progress goes to stderr: a bar in a terminal; in logs (cron, systemd, Kubernetes) a line
    every --progress-interval seconds with rows, rows/s, rejects and ETA.

    \b
    Exit codes: 0 done; 1 error (the summary says what was written before it);
    2 usage error; 3 more rows rejected than --max-reject-rate; 130/143 interrupted.

    \b
    Examples:
      mmindex ingest data/*.parquet --collection photos
      mmindex ingest s3://bucket/laion/ --image-col jpg --caption-col txt --index-fields year,lang
      mmindex ingest products.parquet -c products --text-fields title,tags   # keyword search on them too
      mmindex ingest photos.parquet --image-root /srv/photos --report run.json --max-reject-rate 0.01
      QDRANT_URL=http://localhost:6333 mmindex ingest data/ -c photos --model ./my-clip
      mmindex ingest data/ -c photos --model open_clip:ViT-B-32/laion2b_s34b_b79k
      mmindex ingest data/ -c photos --model clip-ViT-B-32 \\
          --text-model sentence-transformers/clip-ViT-B-32-multilingual-v1   # queries in 50+ languages
      mmindex ingest data/ -c photos --sync --dry-run            # what a nightly sync would do
      mmindex ingest data/ -c photos --sync --source nightly     # then do it
      mmindex ingest data/ -c photos --sync --max-delete all     # the inputs really lost most rows
      mmindex ingest new/ -c photos --on-duplicate skip          # leave out copies of stored photos
      mmindex ingest beans/ -c beans --split train               # a DatasetDict saved by datasets
    """
    probe_field = given_label_field(labels_path, probe_path, label_field)  # --label-field for the probe alone
    probe_field = None if labels_path else probe_field
    options = IngestOptions(
        image_col=image_col, caption_col=caption_col, id_col=id_col, split=split, payload_cols=split_values(payload_cols),
        batch_size=batch_size, workers=workers, devices=split_values((devices,)) or [] if devices else [],
        pipelined=not no_pipeline, decode=decode, index_fields=split_values(index_fields) or (), max_pixels=max_pixels,
        text_fields=split_values(text_fields),
        optimize=not no_optimize, rejects_path=rejects,
        image_root=None if print_config else image_root_path(image_root),
        missing_caption=missing_caption, skip_bad_files=skip_bad_files, max_payload_bytes=max_payload_bytes,
        thumbnails=thumbnails, source_name=source_name, sync=sync, dry_run=dry_run, max_reject_rate=max_reject_rate,
        max_delete=max_delete, on_duplicate=on_duplicate,
        labelers=ingest_labelers(labels_path, label_templates, label_field, label_top_k, engine)
        + probe_labelers(None if print_config else probe_path, label_top_k, engine, field=probe_field))
    job = IngestJob(list(inputs), store, ModelChoice(model, text_model, model_precision), options, device=device,
                    backend=backend, threads=model_threads, engine=engine, shard=parse_shard(shard_spec),
                    ray=RayOptions(address=ray_address, max_actors=ray_actors, gpus_per_actor=ray_gpus_per_actor),
                    no_rejects=no_rejects, report=report, parallel_writes=parallel_writes, bulk_load=bulk_load)
    if print_config:
        click.echo(json.dumps(job_settings(job.with_default_rejects()), default=str))
        return
    note = (lambda text: None) if quiet else (lambda text: click.echo(text, err=True))
    result = run_ingest_job(job, on_note=note, progress=lambda total: open_progress(
        "ingest", "rows", total, quiet=quiet, interval=progress_interval))
    if as_json:
        click.echo(json.dumps({**result.summary.to_dict(), "exit_code": result.exit_code, "problem": result.problem},
                              default=str))
    else:
        print_summary(result.summary)
    if result.problem:
        click.echo(f"Error: {result.problem}", err=True)
        sys.exit(result.exit_code)


def _delete_limit(value: str) -> str:
    try:
        return parse_max_delete(value).spec
    except UsageError as error:
        raise click.BadParameter(str(error)) from error


# Consent to delete more of a source is typed each time: a setting left in the environment must not turn into deletes.
command_line_only(ingest, {"max_delete"})


def job_settings(job: IngestJob) -> dict:
    """What ``--print-config`` shows: the resolved settings, secrets masked."""
    return {
        "command": "ingest", "inputs": list(job.inputs), "store": job.store.to_dict(), "model": job.models.model,
        "text_model": job.models.text_model, "backend": job.backend, "model_precision": job.models.precision,
        "model_threads": job.threads, "device": job.device, "devices": list(job.options.devices),
        "decode": job.options.decode, "engine": job.engine,
        "shard": list(job.shard) if job.shard else None, "batch_size": job.options.batch_size,
        "workers": job.options.workers, "rejects": job.options.rejects_path, "report": job.report,
        "max_reject_rate": job.options.max_reject_rate, "sync": job.options.sync, "max_delete": job.options.max_delete,
        "source": job.options.source_name,
        "dry_run": job.options.dry_run, "on_duplicate": job.options.on_duplicate,
        "config_file": (click.get_current_context().find_root().obj or {}).get("config_path"),
    }


def print_summary(summary) -> None:
    status = "" if summary.status == "ok" else f" [{summary.status.upper()}]"
    if summary.dry_run:
        click.echo(
            f"collection {summary.collection} [DRY RUN, nothing written]: read {summary.read:,} rows from "
            f"{summary.files} file(s) of source {summary.source!r}\n"
            f"  would embed {summary.upserted:,}  update the payload of {summary.payload_updated:,}"
            + (f" ({summary.signals_added:,} gaining duplicate signals)" if summary.signals_added else "") + "  "
            f"unchanged {summary.unchanged:,}  rejected {summary.rejected:,}  "
            + ("stale points not counted (an input was not read in full)" if summary.stale is None else
               f"would delete {summary.deleted:,}" if summary.deleted or not summary.stale else
               f"stale {summary.stale:,} (over --max-delete: --sync would delete none of them)"
               if summary.delete_refused else f"stale {summary.stale:,} (--sync would delete them)"))
        for warning in summary.warnings[:5]:
            click.echo(f"  warning: {warning}")
        return
    click.echo(
        f"collection {summary.collection}{status}: read {summary.read:,} rows from {summary.files} file(s) in "
        f"{summary.seconds:.1f}s ({summary.rows_per_second:,.1f} rows/s)\n"
        f"  embedded {summary.embedded:,}  upserted {summary.upserted:,}"
        + (f"  payload updated {summary.payload_updated:,}" if summary.payload_updated else "")
        + f"  unchanged (skipped) {summary.unchanged:,}  rejected {summary.rejected:,}"
        + (f"  deleted {summary.deleted:,}" if summary.deleted else "")
        + (f"  duplicates skipped {summary.skipped_duplicates:,}" if summary.skipped_duplicates else "")
        + (f"  duplicates linked {summary.linked_duplicates:,}" if summary.linked_duplicates else "")
        + (f"  not processed {summary.not_processed:,}" if summary.not_processed else "")
        + (f"  duplicate ids {summary.duplicate_ids:,}" if summary.duplicate_ids else "")
        + (f"  (batch halved after {summary.oom_retries} CUDA out-of-memory errors)" if summary.oom_retries else "")
    )
    extras = [f"{summary.image_only:,} without caption (image vector only)" if summary.image_only else "",
              f"{summary.truncated_captions:,} captions longer than the model's limit (embedded truncated, "
              "payload _caption_truncated=true)" if summary.truncated_captions else "",
              f"{summary.cleaned_captions:,} captions cleaned of control characters or bad UTF-8"
              if summary.cleaned_captions else ""]
    for extra in filter(None, extras):
        click.echo(f"  {extra}")
    if summary.stale:
        click.echo(f"  stale {summary.stale:,}: points of source {summary.source!r} that no row of this run produced "
                   "(rows deleted or edited in the inputs); "
                   + ("kept, more than --max-delete allows" if summary.delete_refused else "--sync deletes them"))
    for skipped in summary.skipped_files:
        click.echo(f"  skipped file {skipped['file']}: {skipped['reason']}")
    if summary.signals_added:
        click.echo(f"  {summary.signals_added:,} stored points gained their duplicate signals (no re-embedding)")
    for duplicate in summary.duplicates[:5]:
        click.echo(f"  skipped {duplicate.file} row {duplicate.row}: {duplicate.reason}")
    if summary.skipped_duplicates > 5:
        click.echo(f"  … and {summary.skipped_duplicates - 5:,} more duplicates skipped"
                   + (f" (listed in {summary.rejects_file})" if summary.rejects_file else ""))
    for rejection in summary.rejections[:10]:
        click.echo(f"  rejected {rejection.file} row {rejection.row} [{rejection.stage}]: {rejection.reason}")
    if summary.rejected > 10:
        click.echo(f"  … and {summary.rejected - 10:,} more rejected rows")
    if summary.rejects_file:
        click.echo(f"  all rejected rows: {summary.rejects_file}")
    for warning in summary.warnings[:5]:
        click.echo(f"  warning: {warning}")
    if len(summary.warnings) > 5:
        click.echo(f"  … and {len(summary.warnings) - 5:,} more warnings (--report FILE keeps them)")


@click.command()
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--rows", default=200, show_default=True, type=click.IntRange(1), help="Rows to write.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same rows and images.")
@click.option("--files", default=1, show_default=True, type=click.IntRange(1), help="Split rows over this many files.")
@click.option("--width", default=128, show_default=True, type=click.IntRange(8), help="Image width in pixels.")
@click.option("--height", default=128, show_default=True, type=click.IntRange(8), help="Image height in pixels.")
@click.option("--image-kind", type=click.Choice(["bytes", "struct", "path"]), default="bytes", show_default=True,
              help="How the image column holds images: raw bytes, a {bytes, path} struct, or relative paths.")
@click.option("--format", "image_format", type=click.Choice(["jpeg", "png"]), default="jpeg", show_default=True,
              help="Image file format.")
@click.option("--caption-style", type=click.Choice(["full", "mixed"]), default="full", show_default=True,
              help="full: every caption names the whole scene; mixed: some name only part of it (for training).")
@click.option("--caption-lang", type=click.Choice(["en", "zh", "both", "mixed"]), default="en", show_default=True,
              help="en: English captions; zh: Chinese ones; both: English, plus Chinese in caption_zh and "
                   "short_caption_zh; mixed: each row's in English or Chinese at random (for training). "
                   "The images of a seed are the same in every language.")
@click.option("--start-index", default=0, show_default=True, type=click.IntRange(0),
              help="First row number, so that several samples have distinct ids.")
def sample(output, rows, seed, files, width, height, image_kind, image_format, caption_style, caption_lang,
           start_index):
    """Write synthetic image–caption Parquet (coloured shapes) to OUTPUT.

    Columns: id, image, caption, short_caption ("a red circle"), color, shape, size,
    position, background, second_object, year, score, created (timestamp), tags (list);
    with --caption-lang both also caption_zh and short_caption_zh ("一个红色的圆形").
    Same seed, same data.

    \b
    Examples:
      mmindex sample data --rows 1000 --files 4 --width 640 --height 480
      mmindex sample heldout --rows 1000 --seed 1234 --caption-lang both
    """
    paths = write_sample(output, rows=rows, seed=seed, files=files, width=width, height=height,
                         image_kind=image_kind, image_format=image_format, caption_style=caption_style,
                         start_index=start_index, caption_lang=caption_lang)
    click.echo(f"wrote {rows:,} rows to {len(paths)} file(s) under {output}")
