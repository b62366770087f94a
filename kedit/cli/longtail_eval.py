"""``kedit longtail genes | probe | edit``: the long-tail suite's gene benchmark, probing and editing.

:func:`register` adds the commands to the ``longtail`` typer app (:mod:`kedit.cli.longtail` calls it
once), beside ``build`` and ``stats``:

* ``genes`` — a benchmark folder on the *subject popularity* axis from Debian's org.Hs.eg.db and
  GO.db SQLite files (:mod:`kedit.longtail.genes`);
* ``probe`` — token accuracy of every fact before editing, without and with k demonstrations, and the
  best over all valid objects of one-to-many facts (:mod:`kedit.longtail.probe`);
* ``edit`` — each fact edited alone by a method and measured with kedit's runner
  (:mod:`kedit.longtail.evaluate`); the folder is a ``kedit bench`` run.

Every run folder resumes with ``--resume``; ``kedit report`` draws the long-tail tables and plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kedit.cli import common
from kedit.models.loading import DEFAULT_MODEL
from kedit.runs import command_line

BenchArgument = Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A benchmark folder (cases.jsonl, demonstrations.jsonl, manifest.json).")]
OutOption = Annotated[Path, typer.Option(file_okay=False, help="Run folder to write (or continue with --resume).")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue the run in --out where it stopped.")]
ProgressOption = Annotated[bool, typer.Option(help="Show a progress bar on stderr.")]


def _cells_line(summary: dict, metric: str) -> str:
    shown = [f"{c['bin']} {c['estimate']:.2f} (n={c['n']})" for c in summary["cells"]
             if c["metric"] == metric and c["cardinality"] == "all" and c["estimate"] is not None]
    return f"{metric}: " + (", ".join(shown) or "no facts")


@common.reports_errors
def genes(
    out: Annotated[Path, typer.Option(file_okay=False, help="Benchmark folder to write.")],
    orgdb: Annotated[Path, typer.Option(help="org.Hs.eg.sqlite (Debian r-bioc-org.hs.eg.db; make orgdb).")] = Path("/usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite"),
    godb: Annotated[Path, typer.Option(help="GO.sqlite with the GO term names (Debian r-bioc-go.db).")] = Path("/usr/lib/R/site-library/GO.db/extdata/GO.sqlite"),
    templates: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Question/rephrase templates YAML (default: kedit's gene_templates.yaml).")] = None,
    n: Annotated[int, typer.Option(min=1, help="Facts per bin x cardinality (stratified) or in all (natural).")] = 25,
    sampling: Annotated[str, typer.Option(help="stratified (n per bin x cardinality) or natural (the population's shares).")] = "stratified",
    bins: Annotated[str, typer.Option(help="Bin edges on the subject's PubMed article count.")] = "10,100,1000",
    k: Annotated[int, typer.Option(min=0, help="Held-out demonstrations per relation.")] = 5,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 42,
) -> None:
    """Build a benchmark on the subject-popularity axis (gene -> PubMed links over MEDLINE) from org.Hs.eg.db."""
    from kedit.errors import KeditError
    from kedit.longtail.bins import Bins
    from kedit.longtail.genes import (
        TEMPLATES_PATH,
        build_gene_benchmark,
        load_templates,
        read_gene_source,
        write_gene_benchmark,
    )
    from kedit.longtail.sampling import SAMPLING_MODES

    if sampling not in SAMPLING_MODES:
        raise KeditError(f"--sampling must be one of {', '.join(SAMPLING_MODES)}, got {sampling!r}")
    log = common.stderr_console()
    with log.status("reading org.Hs.eg.db and GO.db …"):
        source = read_gene_source(orgdb, godb)
    log.print(f"{len(source.triples)} triples of {len(source.popularity)} genes with PubMed links")
    benchmark = build_gene_benchmark(source, load_templates(templates or TEMPLATES_PATH), bins=Bins.parse(bins), n=n,
                                     mode=sampling, k=k, seed=seed)  # type: ignore[arg-type]
    write_gene_benchmark(benchmark, out)
    console = common.stdout_console()
    for label, counts in benchmark.manifest["sample"].items():
        population = benchmark.manifest["population"][label]
        console.print(f"subject popularity {label}: " + ", ".join(
            f"{card} {counts[card]} of {population[card]}" for card in counts))
    console.print(f"{len(benchmark.cases)} case(s), {len(benchmark.demonstrations)} demonstration(s): {escape(str(out))}")


@common.reports_errors
def probe(
    bench: BenchArgument,
    out: OutOption,
    model: common.ModelOption = DEFAULT_MODEL,
    k: Annotated[int, typer.Option(min=0, help="Demonstrations before the question in the demonstrated variant.")] = 5,
    max_objects: Annotated[int | None, typer.Option(min=1, help="Score at most this many valid objects per fact (default: all).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Probe only the first N facts.")] = None,
    device: common.DeviceOption = "cpu",
    start_token: common.StartTokenOption = "auto",
    resume: ResumeOption = False,
    progress: ProgressOption = True,
) -> None:
    """Probe the unedited model per fact: token accuracy without and with demonstrations, own and best object."""
    from kedit.longtail.probe import run_probe

    log = common.stderr_console()
    lm, _ = common.load_lm(model, device, log, start_token)
    summary = run_probe(lm, bench, out, k=k, max_objects=max_objects, limit=limit, resume=resume, progress=progress,
                        model_name=model, command=command_line())
    console = common.stdout_console()
    for metric in ("plain.accuracy", "demonstrations.accuracy", "demonstrations.best_accuracy"):
        console.print(escape(_cells_line(summary, metric)))
    console.print(f"{summary['cases']} fact(s); results: {escape(str(out))}")


@common.reports_errors
def edit(
    bench: BenchArgument,
    out: OutOption,
    method: common.MethodOption = "rome",
    model: common.ModelOption = DEFAULT_MODEL,
    cardinality: Annotated[str | None, typer.Option(help="Edit only one-to-one or one-to-many facts (default: both).")] = None,
    per_cell: Annotated[int | None, typer.Option(min=1, help="Edit the first N facts of each bin x cardinality (default: all).")] = None,
    max_labels: Annotated[int, typer.Option(min=1, help="A one-to-many fact's own object plus up to N-1 others: MLE's labels and the other-object probes.")] = 5,
    set_: common.SetOption = None,
    hparams: common.HparamsOption = None,
    device: common.DeviceOption = "cpu",
    start_token: common.StartTokenOption = "auto",
    eval_batch: Annotated[int, typer.Option(min=1, help="Cases whose probes share one batched scoring call.")] = 64,
    resume: ResumeOption = False,
    progress: ProgressOption = True,
) -> None:
    """Edit each fact alone (the true object in) and measure reliability, generalization, locality, portability."""
    from kedit.longtail.evaluate import run_edit

    overrides = common.parse_overrides(set_)
    common.check_method(method, hparams, overrides)
    log = common.stderr_console()
    lm, _ = common.load_lm(model, device, log, start_token)
    summary = run_edit(lm, bench, method, out, cardinality=cardinality, per_cell=per_cell, max_labels=max_labels,
                       overrides=overrides, hparams_file=hparams, resume=resume, progress=progress,
                       eval_batch=eval_batch, model_name=model, command=command_line())
    console = common.stdout_console()
    for metric in ("pre.reliability", "post.reliability", "post.generalization", "post.locality"):
        console.print(escape(_cells_line(summary, metric)))
    console.print(f"{summary['cases']} fact(s) edited with {escape(method)}; results: {escape(str(out))}")


def register(longtail_app: typer.Typer) -> None:
    """Add ``genes``, ``probe`` and ``edit`` to the ``kedit longtail`` app."""
    for command in (genes, probe, edit):
        longtail_app.command()(command)
