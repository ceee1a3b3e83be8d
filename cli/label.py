"""``wsi-ccrl label``: embed, cluster and export every cell (GeoJSON for QuPath, CSV, pictures)."""

from __future__ import annotations

from typing import Any

import click
from wsi_ccrl_cli import options

from wsi_ccrl.config import ENCODERS, FEATURES


@click.command()
@click.option(
    "--model",
    "model_path",
    required=True,
    type=options.FILE,
    help="RUN_DIR/model.pt written by `wsi-ccrl train`.",
)
@click.option(
    "--data",
    multiple=True,
    required=True,
    type=click.Path(),
    help="Cell store (*.zarr) or a folder of them; repeat for several. One K-means for all.",
)
@options.out_option(
    "Output folder.", type=click.Path(file_okay=False), default="label-out", show_default=True
)
@click.option("--k", type=click.IntRange(min=2), help="Number of clusters.")
@options.choice_option(
    "--encoder",
    ENCODERS,
    "Backbone to embed with (momentum: the paper's default).",
)
@click.option(
    "--export",
    help="Comma-separated exports: geojson, csv (per slide), anndata (one .h5ad of every cell "
    "for scanpy); e.g. geojson,csv,anndata.",
)
@click.option(
    "--compress/--no-compress",
    default=None,
    help="Write .geojson.gz, which QuPath >= 0.4 imports (default: above 100,000 cells).",
)
@click.option(
    "--simplify",
    type=click.FloatRange(0, 4),
    help="Outline simplification tolerance, in the segmenter's pixels (0: exact pixel edges; "
    "default 0.5, area kept within 1 %).",
)
@click.option("--names", type=options.FILE, help="YAML: cluster id -> name (and optional color).")
@click.option(
    "--save-kmeans",
    type=options.FILE,
    help="Save the centroids, to label later slides with the same clusters.",
)
@click.option(
    "--kmeans",
    "kmeans_path",
    type=options.FILE,
    help="Reuse centroids saved with --save-kmeans (no refit).",
)
@click.option(
    "--fit-only",
    is_flag=True,
    help="Embed only the K-means sample across all stores, fit and save the centroids "
    "(--save-kmeans) for --kmeans ... --shard I/N jobs; nothing is labelled.",
)
@click.option(
    "--shard",
    help="I/N: label every N-th store from the I-th (0-based; a job array's element), with "
    "--kmeans centroids.",
)
@click.option(
    "--fit-sample",
    type=options.AT_LEAST_ONE,
    help="Cells sampled across all stores to fit K-means.",
)
@click.option("--seed", type=int, help="Seed of the K-means sample and init.")
@options.choice_option(
    "--features",
    FEATURES,
    "How embeddings become K-means features (default joint: the embedding beside seven "
    "size, shape and colour numbers; a --kmeans file keeps its own).",
)
@options.placement_options()
@options.batch_size_option()
@options.config_option()
def label(
    model_path: str,
    data: tuple[str, ...],
    out_dir: str,
    k: int | None,
    names: str | None,
    save_kmeans: str | None,
    kmeans_path: str | None,
    fit_only: bool,
    shard: str | None,
    **settings: Any,  # --config and the options named as label settings: command_config's
):
    """Label every cell of STOREs by cluster and export overlays for QuPath.

    \b
    Example:
      wsi-ccrl label --model run/model.pt --data stores/ --k 8 --export geojson,csv --out labels
    """
    from wsi_ccrl.errors import ConfigError, WsiCcrlError
    from wsi_ccrl.io.verify import skipped_summary
    from wsi_ccrl.label.cluster import KMeansModel
    from wsi_ccrl.label.pipeline import fit_kmeans, label_stores
    from wsi_ccrl.segment.cohort import parse_shard

    if fit_only and (save_kmeans is None or kmeans_path is not None or shard is not None):
        raise ConfigError("--fit-only needs --save-kmeans FILE, and no --kmeans or --shard")
    if kmeans_path is not None and k is None:
        k = KMeansModel.load(kmeans_path).k  # the file's k unless --k says otherwise
    cfg = options.command_config("label", k=k)
    if fit_only:
        km = fit_kmeans(model_path, list(data), save_kmeans, cfg)
        click.echo(
            f"K-means k={km.k} fitted on {km.n_fit_:,} sampled cells -> {save_kmeans} "
            "(label shares with --kmeans FILE --shard I/N)"
        )
        if km.info_.get("skipped"):  # the run goes on past a broken store, then says so
            raise WsiCcrlError(
                f"fitted without {len(km.info_['skipped'])} cell store(s) that failed to read "
                f"({'; '.join(km.info_['skipped'][:3])}); `wsi-ccrl check STORE` lists every problem"
            )
        return
    summary = label_stores(
        model_path,
        list(data),
        out_dir,
        cfg,
        kmeans_path=kmeans_path,
        save_kmeans=save_kmeans,
        names=names,
        shard=parse_shard(shard),
    )
    how = "fitted on a sample" if summary.fitted else f"from {kmeans_path}"
    click.echo(
        f"Labelled {summary.n_cells:,} cells of {len(summary.slides)} slide(s) into k={summary.k} "
        f"clusters ({summary.encoder} encoder, K-means {how}) in {summary.seconds:.1f} s."
    )
    for slide in summary.slides:
        click.echo(
            f"  {slide.stem}: {slide.n_cells:,} cells"
            + ("" if slide.embedded else " (embeddings reused)")
            + (f", {slide.repaired} polygons repaired" if slide.repaired else "")
        )
        for path in slide.files:
            click.echo(f"    {path}")
    click.echo(f"  gallery: {summary.gallery}")
    click.echo(f"  report:  {summary.report} (open in a browser)")
    if summary.h5ad is not None:
        click.echo(f"  AnnData: {summary.h5ad} (anndata.read_h5ad; obsm X_ccrl, spatial)")
    if summary.kmeans is not None:
        click.echo(f"  K-means: {summary.kmeans} (reuse with --kmeans)")
    click.echo(f"  config:  {summary.config}")
    if "geojson" in cfg.export:
        click.echo(
            "Open in QuPath: open the slide, then File > Import objects (or drag the "
            ".geojson/.geojson.gz onto the viewer); cells appear as detections classified by "
            "cluster. For a whole project: scripts/import_overlays.groovy (README, 'In QuPath')."
        )
    if summary.skipped:  # the run went on past a broken store; it ends non-zero, naming it
        raise WsiCcrlError(skipped_summary(summary.skipped, summary.n_stores))
