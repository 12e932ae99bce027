"""The ``parcelzarr`` command line: parses, calls the library, prints. No logic here."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import click

from parcelzarr.errors import ParcelzarrError
from parcelzarr.stores._azure import check_option_names, redact

__all__ = ["main", "run"]


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (a scheduler's or ``kill``'s stop) ends any command as Ctrl-C does, through
    the cleanup code, with status 143: an ingest releases the store's writer lock (a blob
    lease on Azure, which would otherwise block the next run for up to its 30 s), stats
    remove their temporary spill and partial output. A second SIGTERM during that cleanup
    kills at once. Without this, SIGTERM ends Python on the spot and leaves them all behind.
    Outside the main thread (where no handler can be set) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _quiet_background_logging() -> None:
    """Stop logging and flush the standard streams before :func:`run` ends the process with
    ``os._exit`` (which flushes nothing): daemon threads (zarr's event loop, retries) may
    still be logging, above all with ``-vv``."""
    logging.disable(logging.CRITICAL)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _options(pairs: tuple[str, ...]) -> dict[str, Any] | None:
    """``--storage-option NAME=VALUE`` pairs; what was given is never echoed (it may be a key)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise click.BadParameter("expected NAME=VALUE, e.g. account_key=...; what was given "
                                     "is not repeated here", param_hint="--storage-option")
        out[key.strip()] = {"true": True, "false": False}.get(value.lower(), value)
    check_option_names(out)
    return out or None


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _top_level_csv(value: str | None) -> list[str] | None:
    """Split on commas outside parentheses (expressions may call ``minimum(a, b)``)."""
    if not value:
        return None
    parts, depth, cur = [], 0, ""
    for ch in value:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


class _Group(click.Group):
    """Turns parcelzarr errors (and OS errors such as an unwritable --out) into one clear line
    and exit code 2 (no traceback; --debug shows it)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with _sigterm_unwinds():  # a stopped ingest releases its lock, stats its partial
                return super().invoke(ctx)
        except (ParcelzarrError, NotImplementedError, ValueError, TypeError, OSError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {redact(str(exc))}", err=True)
            sys.exit(2)


_storage_option = click.option(
    "--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE",
    help="Option for adlfs (e.g. account_name=..., account_key=...); repeatable. Credentials "
         "otherwise come from AZURE_STORAGE_* environment variables.",
)


_wait_option = click.option(
    "--wait", type=click.FloatRange(min=0), metavar="SECONDS",
    help="Wait this long for another ingest or compaction of the store to finish (default "
         "0: fail at once; PARCELZARR_LOCK_WAIT).",
)


@click.group(cls=_Group)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="parcelzarr")
@click.pass_context
def main(ctx: click.Context, verbose: int, debug: bool) -> None:
    """parcelzarr: per-parcel satellite statistics from parcel-sized Zarr chunks."""
    ctx.obj = {"debug": debug}
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        # A command that fails on a dead store cancels its queued requests; the coroutines
        # never started are collected at exit, which Python reports as warnings after the
        # one-line error. They say nothing to the user (--debug shows them).
        warnings.filterwarnings("ignore", message="coroutine .* was never awaited",
                                category=RuntimeWarning)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--store", required=True, help="Store URL: local dir, az://container/path.")
@click.option("--bands", help="Comma-separated Sentinel-2 bands to keep, e.g. B02,B03,B04,B08.")
@click.option("--band", help="Band name for sources whose file names do not say (e.g. WorldCover).")
@click.option("--time", "when", help="Date (YYYY-MM-DD) for sources whose names do not say.")
@click.option("--scale", type=float,
              help="Reflectance scale of named layers (value = DN * scale + offset), e.g. "
                   "0.0001 for Sentinel-2 L2A DNs.")
@click.option("--offset", type=float,
              help="Reflectance offset of named layers, e.g. -0.1 for Sentinel-2 L2A DNs "
                   "(processing baseline 04.00 and later).")
@click.option("--force", is_flag=True,
              help="Ingest a file the store already holds under another --time/--band.")
@click.option("--time-from-bands", "times_file", type=click.Path(exists=True, dir_okay=False),
              help="JSON list of dates, one per file band: band i of each file is date i of "
                   "one layer named --band (e.g. a multi-date NDVI stack).")
@click.option("--chunk", type=int, help="Object (chunk or shard) edge in pixels for new grids "
                                        "(default 256).")
@click.option("--inner-chunk", type=int, help="Shard new grids into chunks of this edge "
                                              "(index at the start of each object).")
@click.option("--workers", type=int, help="Parallel writer threads (default: cores).")
@click.option("--scheduler", help="Dask distributed scheduler address (tcp://host:8786).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_wait_option
@click.option("--max-growth-px", type=int,
              help="Most pixels one source may add to a grid (default 1e10, "
                   "PARCELZARR_MAX_GROWTH_PX).")
@_storage_option
def ingest(sources: tuple[str, ...], store: str, bands: str | None, band: str | None,
           when: str | None, scale: float | None, offset: float | None, force: bool,
           times_file: str | None, chunk: int | None,
           inner_chunk: int | None, workers: int | None, scheduler: str | None,
           quiet: bool, wait: float | None, max_growth_px: int | None,
           storage_option: tuple[str, ...]) -> None:
    """Rewrite GeoTIFF SOURCES (paths, az:// URLs, globs, STAC JSON) into the store."""
    from parcelzarr import ingest as run

    times = None
    if times_file:
        times = json.loads(Path(times_file).read_text())
        if not isinstance(times, list):
            raise click.BadParameter("expected a JSON list of dates",
                                     param_hint="--time-from-bands")
    report = run(list(sources), store, bands=_csv(bands), band=band, time=when, times=times,
                 scale=scale, offset=offset, force=force,
                 storage_options=_options(storage_option), chunk_size=chunk,
                 inner_chunk=inner_chunk, workers=workers, scheduler=scheduler, quiet=quiet,
                 lock_timeout=wait, max_growth_px=max_growth_px)
    click.echo(str(report))


@main.command()
@click.argument("url")
@click.option("--time-chunk", type=int, default=32, show_default=True,
              help="Dates per object after compaction.")
@click.option("--workers", type=int, help="Threads (default: cores).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_wait_option
@_storage_option
def compact(url: str, time_chunk: int, workers: int | None, quiet: bool, wait: float | None,
            storage_option: tuple[str, ...]) -> None:
    """Rechunk the store at URL along time: a parcel's season in a few requests."""
    from parcelzarr import compact as run

    report = run(url, time_chunk=time_chunk, storage_options=_options(storage_option),
                 workers=workers, quiet=quiet, lock_timeout=wait)
    click.echo(str(report))


@main.command()
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_storage_option
def info(url: str, as_json: bool, storage_option: tuple[str, ...]) -> None:
    """List the grids, bands, dates and chunking of the store at URL."""
    from parcelzarr.query import open_store

    data = open_store(url, storage_options=_options(storage_option)).info()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(data["url"])
    for name, g in data["grids"].items():
        click.echo(f"  grid {name}: {g['crs']}, {g['shape'][1]}x{g['shape'][0]} px of "
                   f"{g['resolution'][0]:g}, chunks {g['chunks'][0]}x{g['chunks'][1]}")
        for band, b in sorted(g["bands"].items()):
            size = (f", {b['objects']} objects, {b['stored_bytes'] / 1e6:.1f} MB"
                    if "objects" in b else "")
            shape = "x".join(map(str, b["object_shape"]))
            click.echo(f"    band {band}: {b['dtype']}, objects {shape} (t, y, x){size}")
        if g.get("tiles"):
            click.echo(f"    tiles ({len(g['tiles'])}): {', '.join(g['tiles'][:12])}"
                       + (" ..." if len(g["tiles"]) > 12 else ""))
        dates = g["times"]
        click.echo(f"    dates ({len(dates)}): {', '.join(d[:10] for d in dates[:12])}"
                   + (" ..." if len(dates) > 12 else ""))


@main.command()
@click.argument("url")
@click.argument("parcels")
@click.option("--out", required=True,
              help="Output file (.parquet, .geoparquet or .csv; --output xarray: .zarr or .nc) "
                   "or a PostgreSQL table postgresql://[user@host/db]?table=NAME (rows of the "
                   "same parcel, band and time replaced; credentials from PG* variables or "
                   "~/.pgpass).")
@click.option("--bands", help="Comma-separated bands (default: all).")
@click.option("--indices", help="Comma-separated indices (ndvi, evi, savi, ndwi) or "
              "expressions over band names, e.g. '(B08 - B04) / (B08 + B04)'.")
@click.option("--stats", "stat_names", default="count,mean,std,min,max,median", show_default=True)
@click.option("--id-column", help="Parcel id column (default: row index as parcel_id; for "
              "a PostGIS table its primary key).")
@click.option("--layer", help="Layer of a multi-layer PARCELS file (default: its first layer).")
@click.option("--time", "when",
              help="Year (2024), month (2024-05), day, or START/END range of these.")
@click.option("--all-touched", is_flag=True, help="Count every pixel a parcel touches.")
@click.option("--coverage", is_flag=True,
              help="Weight pixels by the fraction the parcel covers (as exactextract).")
@click.option("--min-coverage-frac", type=float, metavar="F",
              help="With --coverage: leave out pixels the parcel covers less than F of.")
@click.option("--categorical", is_flag=True,
              help="Class counts, fractions and areas per parcel instead of --stats.")
@click.option("--mask", "mask_layer", is_flag=False, flag_value="scl", metavar="[LAYER]",
              help="Mask pixels by a layer's classes: alone (or 'scl') the SCL band's clouds, "
                   "shadows, cirrus and no data; or any layer, e.g. --mask CLM "
                   "--mask-classes 1.")
@click.option("--mask-classes", help="Comma-separated values of the mask layer to exclude "
              "(SCL default 0,1,3,8,9,10; required for other layers).")
@click.option("--interval", help="Composite each interval's dates pixel by pixel first "
              "(pandas offset alias: 1MS monthly, W-MON, QS, 10D); time = interval start.")
@click.option("--composite", type=click.Choice(["median", "mean", "max", "min"]),
              help="Pixel-wise composite of an --interval's valid observations "
                   "(default median).")
@click.option("--weights-band", metavar="LAYER",
              help="Weighting raster of the weighted_* statistics (weighted_mean, "
                   "weighted_sum, weighted_stdev, weighted_variance, weighted_frac): a band, "
                   "index or expression over bands, as exactextract's weights.")
@click.option("--default-weight", type=float, metavar="W",
              help="Weight of pixels whose --weights-band value is nodata (default: none, "
                   "their parcel's weighted statistics are NaN, as in exactextract).")
@click.option("--crs", help="CRS of PARCELS when the file declares none (e.g. EPSG:4326).")
@click.option("--concurrency", type=click.IntRange(min=1), metavar="N",
              help="Chunk requests in flight (default PARCELZARR_CONCURRENCY, 64).")
@click.option("--geometry", is_flag=True,
              help="Add each parcel's geometry (GeoParquet, WKT in CSV, a PostGIS geometry "
                   "column in a PostgreSQL table).")
@click.option("--output", "shape", type=click.Choice(["long", "wide", "xarray"]), default="long",
              show_default=True, help="long: a row per parcel, band and date; wide: a row per "
              "parcel and date, {band}_{stat} columns; xarray: an xvec vector cube (.zarr/.nc).")
@click.option("--scheduler", help="Dask distributed scheduler address.")
@click.option("--batch-size", type=click.IntRange(min=1), metavar="N",
              help="Stream a GeoParquet PARCELS file in spatial batches of N parcels, in "
                   "memory set by N (output: Parquet, one row group per batch).")
@click.option("--presorted", is_flag=True,
              help="With --batch-size: the file is already in a spatial order (batches are "
                   "consecutive rows; no sort pass, no temporary spill in TMPDIR).")
@click.option("--deadline", type=float, metavar="SECONDS",
              help="Fail (never a partial result) if the query takes longer "
                   "(default PARCELZARR_DEADLINE: none).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_storage_option
def stats(url: str, parcels: str, out: str, bands: str | None, indices: str | None,
          stat_names: str, id_column: str | None, layer: str | None, when: str | None,
          all_touched: bool,
          coverage: bool, min_coverage_frac: float | None, categorical: bool,
          mask_layer: str | None, mask_classes: str | None,
          interval: str | None, composite: str | None, weights_band: str | None,
          default_weight: float | None, crs: str | None, concurrency: int | None,
          geometry: bool, shape: str, scheduler: str | None, batch_size: int | None,
          presorted: bool, deadline: float | None,
          quiet: bool, storage_option: tuple[str, ...]) -> None:
    """Per-parcel statistics of the store at URL for PARCELS (a file GeoPandas reads, or
    postgresql://...?table=NAME or ?sql=SELECT...), written to --out."""
    import pandas as pd

    from parcelzarr.query import open_store, write_cube, write_stats
    from parcelzarr.query._cube import Output
    from parcelzarr.query._pg import is_postgres_url, parse_pg_url

    outputs: dict[str, Output] = {"long": "pandas", "wide": "wide", "xarray": "xarray"}
    cube = shape == "xarray"
    target: Path | str
    if is_postgres_url(out):
        if cube:
            raise click.BadParameter("--output xarray writes a .zarr or .nc cube, not a "
                                     "PostgreSQL table", param_hint="--out")
        target = out
        shown = parse_pg_url(out).shown
    else:
        target = Path(out)
        shown = str(target)
        allowed = (".zarr", ".nc") if cube else (".parquet", ".geoparquet", ".csv")
        if target.suffix.lower() not in allowed:
            raise click.BadParameter(
                f"--out must end in {', '.join(allowed)} with --output {shape}"
                + ("" if cube else ", or be postgresql://...?table=NAME"), param_hint="--out")
    try:
        classes = [int(c) for c in _csv(mask_classes) or []] or None
    except ValueError:
        raise click.BadParameter("expected whole numbers separated by commas, e.g. 1 or 3,8,9",
                                 param_hint="--mask-classes") from None
    if presorted and batch_size is None:
        raise click.BadParameter("--presorted describes a file streamed with --batch-size N",
                                 param_hint="--presorted")
    store = open_store(url, storage_options=_options(storage_option))
    # what the Python API takes, the same for the streamed and the whole query
    query: dict[str, Any] = {
        "bands": _csv(bands), "indices": _top_level_csv(indices), "stats": stat_names,
        "time": when, "all_touched": all_touched,
        "weights": "coverage" if coverage else None, "categorical": categorical,
        "min_coverage_frac": min_coverage_frac, "mask": mask_layer, "mask_classes": classes,
        "interval": interval, "composite": composite, "weights_band": weights_band,
        "default_weight": default_weight, "crs": crs, "concurrency": concurrency,
        "id_column": id_column, "quiet": quiet, "deadline": deadline}
    if batch_size is not None:
        from parcelzarr.query import stream_zonal_stats

        if ((isinstance(target, Path) and target.suffix.lower() != ".parquet")
                or geometry or scheduler or shape != "long" or layer):
            raise click.BadParameter("--batch-size streams a GeoParquet file to Parquet (--out "
                                     "*.parquet) or to a PostgreSQL table, without "
                                     "--geometry, --scheduler or --layer",
                                     param_hint="--batch-size")
        rep = stream_zonal_stats(store, parcels, target, batch_size=batch_size,
                                 presorted=presorted, **query)
        click.echo(f"{rep.rows:,} rows -> {shown}")
        click.echo(str(rep))
        return
    df = store.zonal_stats(parcels, layer=layer, scheduler=scheduler, output=outputs[shape],
                           **query)
    if isinstance(df, pd.DataFrame):
        write_stats(df, target, parcels=parcels, id_column=id_column, geometry=geometry,
                    layer=layer, crs=crs)
        click.echo(f"{len(df):,} rows -> {shown}")
    else:
        write_cube(df, Path(target))
        click.echo(f"cube {dict(df.sizes)} -> {shown}")
    click.echo(str(store.last_report))


@main.command()
@click.argument("url")
@click.argument("parcels")
@click.option("--bands", help="Comma-separated bands (default: all).")
@click.option("--indices", help="Comma-separated indices or expressions over band names.")
@click.option("--stats", "stat_names", default="count,mean,std,min,max,median", show_default=True)
@click.option("--id-column", help="Parcel id column (default: row index as parcel_id).")
@click.option("--layer", help="Layer of a multi-layer PARCELS file (default: its first layer).")
@click.option("--time", "when",
              help="Year (2024), month (2024-05), day, or START/END range of these.")
@click.option("--all-touched", is_flag=True, help="Count every pixel a parcel touches.")
@click.option("--coverage", is_flag=True, help="Weight pixels by the fraction covered.")
@click.option("--categorical", is_flag=True, help="Class counts instead of --stats.")
@click.option("--mask", "mask_layer", is_flag=False, flag_value="scl", metavar="[LAYER]",
              help="Mask by a layer's classes (alone: SCL), as in `stats`.")
@click.option("--mask-classes", help="Comma-separated values of the mask layer to exclude.")
@click.option("--weights-band", metavar="LAYER",
              help="Weighting raster of the weighted_* statistics, as in `stats`.")
@click.option("--crs", help="CRS of PARCELS when the file declares none.")
@click.option("--concurrency", type=click.IntRange(min=1), metavar="N",
              help="Chunk requests in flight (default PARCELZARR_CONCURRENCY, 64).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_storage_option
def plan(url: str, parcels: str, bands: str | None, indices: str | None, stat_names: str,
         id_column: str | None, layer: str | None, when: str | None, all_touched: bool,
         coverage: bool, categorical: bool, mask_layer: str | None, mask_classes: str | None,
         weights_band: str | None, crs: str | None, concurrency: int | None,
         as_json: bool, storage_option: tuple[str, ...]) -> None:
    """Dry run of `stats`: the grids, chunks, GET requests, bytes, seconds and dollars the
    query would cost, reading no pixel."""
    from parcelzarr.query import open_store

    classes = [int(c) for c in _csv(mask_classes) or []] or None
    store = open_store(url, storage_options=_options(storage_option))
    result = store.plan(parcels, bands=_csv(bands), indices=_top_level_csv(indices),
                        stats=stat_names, time=when, all_touched=all_touched,
                        weights="coverage" if coverage else None, categorical=categorical,
                        mask=mask_layer, mask_classes=classes, weights_band=weights_band,
                        crs=crs, concurrency=concurrency, id_column=id_column, layer=layer)
    if as_json:
        out = result.as_dict()
        out.pop("model", None)
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(str(result))
    for g in result.grids:
        click.echo(f"  grid {g.grid}: {g.parcels:,} parcels, {g.spatial_chunks:,} spatial "
                   f"chunks, {g.requests:,} requests ({g.objects_written:,} objects written), "
                   f"{g.bytes_read / 1e6:,.1f} MB")


@main.command()
@click.option("--store", help="Store URL (default: demo.zarr in the cache folder, "
              "~/.cache/parcelzarr/demo or PARCELZARR_CACHE_DIR; never the source tree).")
@click.option("--size", default=5490, show_default=True,
              help="Scene edge in 10 m pixels (10980 = a full Sentinel-2 tile).")
@click.option("--parcels", "n_parcels", default=10_297, show_default=True,
              help="Number of parcels (DeWitt County, Illinois has 10,297).")
@click.option("--seed", default=0, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where generated data is cached (default: ~/.cache/parcelzarr/demo).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Statistics file (default: next to the store).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(store: str | None, size: int, n_parcels: int, seed: int, data_dir: Path | None,
         out: Path | None, quiet: bool) -> None:
    """Generate a synthetic county, ingest it and compute per-parcel statistics."""
    from parcelzarr.demo import run_demo

    report = run_demo(store, size=size, n_parcels=n_parcels, seed=seed, data_dir=data_dir,
                      out=out, quiet=quiet)
    click.echo(report.summary())


def run() -> None:
    """The ``parcelzarr`` command: :func:`main`, ending a failed command (exit status 2,
    its one-line error already printed and everything unwound) without interpreter
    finalization: requests of the failed command may still be in flight on obstore's
    threads, which abort the process (-6, SIGABRT) if they complete while Python finalizes.
    A successful command exits normally; the stores' exit hook lets those threads settle
    first (see ``stores/_quiesce.py``)."""
    try:
        main()
    except SystemExit as exc:
        if exc.code == 2:
            _quiet_background_logging()
            os._exit(2)
        raise


if __name__ == "__main__":  # pragma: no cover
    run()
