"""The ``wsbench`` command line."""
from __future__ import annotations

import json
import os
import shlex
import sys
import traceback
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from wsbench import __version__
from wsbench.config import parse_overrides, parse_recipe
from wsbench.errors import WsbenchError, WsbenchWarning
from wsbench.progress import bars, zoo_bar
from wsbench.scores import fmt as fmt_score
from wsbench.scores import row_text

# rich_markup_mode=None: help is plain text (no markup eating "[ray]", flags shown as flags).
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Benchmark harness for weight-space learning.")
inrs_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Build and inspect INR zoos.")
app.add_typer(inrs_app, name="inrs")
zoo_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                      help="Build the zoo of any dataset: INR zoos, CNN zoos.")
app.add_typer(zoo_app, name="zoo")
out_console = Console(soft_wrap=True)  # a printed line stays one line in a log file
err_console = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}

# The results root is --results everywhere (where runs are written and where they are read from);
# --out is its older spelling, kept as an alias.
OutOpt = typer.Option(Path("results"), "--results", "--out", help="Results root (--out: older alias).")
DataOpt = typer.Option(None, "--data-dir", envvar="WSBENCH_DATA", show_default=False,
                       help="Dataset root (torchvision raw layout). Default: $WSBENCH_DATA, else data/ under the "
                            "cache root (~/.cache/wsbench/data).")
CacheOpt = typer.Option(None, "--cache-dir", envvar="WSBENCH_CACHE", show_default=False,
                        help="Cache root for INR zoos. Default: $WSBENCH_CACHE, else $XDG_CACHE_HOME/wsbench, "
                             "else ~/.cache/wsbench.")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.")
LimitOpt = typer.Option(None, "--limit", help="Keep the first N samples of EACH split (train, val and test), "
                        "for quick runs; part of the run id.")
SaveModelsOpt = typer.Option(False, "--save-models", help="Keep each trained run's selected model as safetensors "
                             "under RESULTS/models/ (reload: wsbench model eval RUN_ID).")
TrackOpt = typer.Option(None, "--track", help="Per-epoch metrics to tensorboard[:DIR] (default DIR: "
                        "RESULTS/tensorboard; pip install 'wsbench[tracking]') or wandb[:PROJECT]. Off by default.")
JsonOpt = typer.Option(False, "--json", help="Print a JSON summary on stdout at the end (results root, run ids, "
                       "statuses); the log stays on stderr.")
EpochsOpt = typer.Option(None, "--epochs", help="Training epochs (shorthand for --set epochs=N).")
SetOpt = typer.Option([], "--set", help="Config override key=value; repeatable.")
ConfigOpt = typer.Option(None, "--config", help="JSON or TOML file of config overrides.")
RecipeOpt = typer.Option([], "--recipe", help="INR fitting recipe override key=value (e.g. lr=0.001, steps=200); "
                         "repeatable. Fits another zoo; runs on it get their own ids.")


def _registry():
    from wsbench.plugins import registry
    return registry()


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"wsbench {__version__}\n")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
          strict: bool = typer.Option(False, "--strict", help="A plugin that fails to load is an error "
                                      "(or WSBENCH_STRICT=1)."),
          version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the version and exit.")):
    _state["debug"] = debug
    if strict:
        os.environ["WSBENCH_STRICT"] = "1"


def _progress() -> Progress:
    return bars(err_console)


def _settings(out, data_dir, cache_dir, device, limit, epochs, sets, config_file, recipe=(), save_models=False,
              track=None):
    from wsbench.runner import Settings
    from wsbench.tracking import parse_track
    overrides = parse_overrides(sets, config_file)
    if epochs is not None:
        overrides["epochs"] = epochs
    parse_track(track)  # an unknown tracker fails before any work
    return Settings(out=out, data_dir=data_dir, cache_dir=cache_dir, device=device, limit=limit,
                    overrides=overrides, recipe=parse_recipe(recipe), save_models=save_models, track=track)


def _summary(outcomes, settings, **extra) -> dict:
    """What ``--json`` prints: where the results went and what became of every cell."""
    root = Path(settings.out).expanduser().resolve()
    runs = []
    for o in outcomes:
        row = o.row or {}
        model = (root / "models" / f"dataset={o.cell.dataset}" / f"arch={o.cell.arch}"
                 / f"{row.get('run_id')}.safetensors")
        runs.append({"dataset": o.cell.dataset, "arch": o.cell.arch, "seed": o.cell.seed, "run_id": row.get("run_id"),
                     "status": o.status, "test_acc": row.get("test_acc"), "score": row.get("score"),
                     "test_score": row.get("test_score"), "error": row.get("error"),
                     "model": str(model) if model.exists() else None})
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {"results": str(root), "counts": dict(sorted(counts.items())), "runs": runs, **extra}


def _print_json(data: dict) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> [0, 1, 2]; ``"0,2,5"`` -> [0, 2, 5]. Seeds are whole numbers from 0 to 2**63 - 1
    (stored as int64); a count is at most :data:`wsbench.config.MAX_SEED_COUNT`."""
    from wsbench.config import MAX_SEED, MAX_SEED_COUNT, check_seed
    hint = "write a count (5: seeds 0..4) or a comma list (0,1,2)"
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
            if not seeds:
                raise WsbenchError(f"--seeds {text!r} lists no seed; {hint}")
            for s in seeds:
                check_seed(s, f"--seeds {text!r}: seed")
        else:
            n = int(text)
            if n <= 0:
                raise ValueError
            if n > MAX_SEED_COUNT:
                raise WsbenchError(f"--seeds {n} asks for {n} seeds; a grid takes at most {MAX_SEED_COUNT}: pass a "
                                   f"smaller count, or a comma list of seeds (each from 0 to {MAX_SEED})")
            seeds = list(range(n))
    except ValueError:
        raise WsbenchError(f"--seeds {text!r} is neither a positive count nor a comma list; {hint}") from None
    if len(set(seeds)) != len(seeds):
        raise WsbenchError(f"--seeds {text!r} repeats a seed; list each seed once")
    return seeds


def _unique(option: str, values: List[str]) -> List[str]:
    """``values`` of a repeatable option, each once: a repeat is an error naming it."""
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise WsbenchError(f"{option} {repeated[0]} is given more than once; list each once")
    return values


def _run_cells(cells, settings, keep_going: bool, executor: str = "local", ray_address: str | None = None,
               workers: int = 1):
    """Run cells through an executor with the grid display; returns one CellOutcome per cell.

    Failures are stored; without ``keep_going`` the first one stops with its error.
    """
    from wsbench.grid import run_cells
    from wsbench.progress import GridDisplay
    with GridDisplay(err_console) as display:
        outcomes = run_cells(cells, settings, _registry(), executor, workers, ray_address,
                             isolate=keep_going or not _state["debug"], on_event=display)
    if not keep_going:
        for o in outcomes:
            if o.failed:
                raise WsbenchError(f"{o.cell.label} {o.status}: {o.row.get('error')}")
    return outcomes


@app.command()
def run(arch: str = typer.Option(..., "--arch", help="Architecture name (see `wsbench plugins`)."),
        dataset: str = typer.Option("shapes", "--dataset", help="Dataset name."),
        seed: int = typer.Option(0, "--seed"),
        out: Path = OutOpt, data_dir: Optional[Path] = DataOpt, cache_dir: Optional[Path] = CacheOpt,
        device: str = DeviceOpt, limit: Optional[int] = LimitOpt, epochs: Optional[int] = EpochsOpt,
        set_: List[str] = SetOpt, config: Optional[Path] = ConfigOpt, recipe: List[str] = RecipeOpt,
        save_models: bool = SaveModelsOpt, track: Optional[str] = TrackOpt, as_json: bool = JsonOpt):
    """Train and evaluate one cell (dataset, architecture, seed) and store it.

    A run killed while training resumes after its last finished epoch when the same command is run again.
    """
    from wsbench.runner import Cell
    settings = _settings(out, data_dir, cache_dir, device, limit, epochs, set_, config, recipe, save_models, track)
    res = _run_cells([Cell(dataset, arch, seed)], settings, keep_going=False)
    row = res[0].row
    if as_json:
        _print_json(_summary(res, settings))
    elif res[0].status == "skipped":
        out_console.print(f"{dataset}/{arch}/seed {seed}: already stored (run {row['run_id']}); nothing to train",
                          highlight=False)
    elif row.get("status") == "finished":
        out_console.print(f"{dataset}/{arch}/seed {seed}: {row_text(row)} "
                          f"(best epoch {row['best_epoch']}, {row['wall_time_s']:.1f} s) run {row['run_id']}",
                          highlight=False)


@app.command()
def grid(arch: List[str] = typer.Option(..., "--arch", help="Architecture; repeatable."),
         dataset: List[str] = typer.Option(["shapes"], "--dataset", help="Dataset; repeatable."),
         seeds: str = typer.Option("3", "--seeds", help="A count N (seeds 0..N-1) or a list like 0,1,2."),
         out: Path = OutOpt, data_dir: Optional[Path] = DataOpt, cache_dir: Optional[Path] = CacheOpt,
         device: str = DeviceOpt, limit: Optional[int] = LimitOpt, epochs: Optional[int] = EpochsOpt,
         set_: List[str] = SetOpt, config: Optional[Path] = ConfigOpt, recipe: List[str] = RecipeOpt,
         executor: str = typer.Option("local", "--executor", help="local (this machine: this process, or "
                                      "--workers N processes) or ray (one task per cell; pip install "
                                      "'wsbench[ray]')."),
         workers: int = typer.Option(1, "--workers", help="With --executor local: 1 runs the cells in this "
                                     "process, N > 1 in N worker processes sharing the results root (and GPU)."),
         ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (e.g. "
                                                   "ray://head:10001 or auto); default: start a local cluster."),
         save_models: bool = SaveModelsOpt, track: Optional[str] = TrackOpt, as_json: bool = JsonOpt):
    """Run the seed x architecture grid; cells already stored are skipped, so rerunning resumes.

    A failing cell is stored with its status and error and the grid goes on; the
    summary lists the failures and the exit code is 1 if there are any. Grids
    sharing a results root split the cells between them. A run killed while
    training resumes after its last finished epoch.
    """
    from wsbench.grid import applicable, grid_cells, summarize
    settings = _settings(out, data_dir, cache_dir, device, limit, epochs, set_, config, recipe, save_models, track)
    cells = grid_cells(_unique("--dataset", dataset), _unique("--arch", arch), parse_seeds(seeds))
    cells, left_out = applicable(cells, _registry())
    if not cells:
        raise WsbenchError(f"no architecture of this grid applies to its datasets: {'; '.join(left_out)}")
    for line in left_out:
        err_console.print(f"not applicable, left out: {line}", highlight=False, soft_wrap=True)
    outcomes = _run_cells(cells, settings, keep_going=True, executor=executor, ray_address=ray_address,
                          workers=workers)
    if as_json:
        _print_json(_summary(outcomes, settings))
    else:
        out_console.print("grid: " + ", ".join(f"{v} {k}" for k, v in summarize(outcomes).items()))
    failed = [o for o in outcomes if o.failed]
    for o in failed:
        err_console.print(f"[red]{o.status}[/red] {escape(o.cell.label)}: {escape(str(o.row.get('error')))}",
                          highlight=False, soft_wrap=True)
    if failed:
        err_console.print(f"{len(failed)} of {len(cells)} cells failed; their errors are stored in the runs table "
                          "(status, error, traceback); rerun the same command to retry them", soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def similarity(metric: List[str] = typer.Option(["cka"], "--metric", help="Metric; repeatable."),
               dataset: List[str] = typer.Option([], "--dataset", help="Only these datasets."),
               out: Path = OutOpt, device: str = DeviceOpt,
               recompute: bool = typer.Option(False, "--recompute", help="Recompute stored pairs."),
               resamples: int = typer.Option(1000, "--resamples", help="Resamples for the 95 % intervals over "
                                             "samples (0: none): bootstrap resamples or half-samples, as the "
                                             "metric declares (see below)."),
               permutations: int = typer.Option(100, "--permutations", help="Shuffles of the sample "
                                                "correspondence for the null level (0: none)."),
               seed: int = typer.Option(0, "--seed", help="Seed of the resamples and shuffles.")):
    """Layer x layer similarity between every pair of stored runs of a dataset, with a 95 % interval
    over samples, a permutation null level, the null-calibrated value and sanity checks on every row.

    Each row names its interval in ci_kind. half-sample (cka-biased, and any metric that declares no
    other): n/2 of the n samples drawn without replacement (no copies), their percentile interval
    rescaled to n and corrected for an O(1/n) bias; covers the population value; valid for any metric.
    expected-at-n (procrustes, svcca): the same without the bias correction; covers the metric's
    expected value at this n, not the population value of a metric biased by more than O(1/n).
    percentile (cka, cka-rbf): bootstrap over samples (with replacement; the metric keeps copies of a
    sample apart); covers the population value of an estimator without bias. per-sample-percentile
    (mknn): bootstrap of per-sample scores with the neighbour sets of all n held fixed; narrower than
    the value's spread. Measured coverage: benchmarks/results/coverage.json.

    calibrated = (value - null mean) / (1 - null mean): 0 at the permutation null, 1 at perfect
    similarity. A constant or non-finite layer is named in a warning; its rows are NaN with a reason.
    A row fails its checks when its value lies outside its own interval."""
    from wsbench import similarity as sim
    from wsbench.store import Store
    from wsbench.train import resolve_device
    reg = _registry()
    metrics = [reg.metric(m) for m in metric]
    if resamples < 0 or permutations < 0:
        raise WsbenchError(f"--resamples {resamples} / --permutations {permutations}: use 0 or a positive count")
    store = Store(out)
    if out.exists() and not out.is_dir():
        raise WsbenchError(f"--results {out} is a file; pass the results root (the folder with runs/)")
    finished = store.finished_runs()
    if not finished:
        raise WsbenchError(f"no finished runs under {out}; run `wsbench grid` first or pass --results")
    stored = sorted({r["dataset"] for r in finished})
    unknown = sorted(set(dataset) - set(stored))
    if unknown:
        raise WsbenchError(f"--dataset {unknown[0]}: no finished runs of it under {out}; datasets with runs there: "
                           f"{', '.join(stored)}")
    store.check_writable()
    with _progress() as progress:
        t = progress.add_task("similarity", total=None, info="")
        counts = sim.compute(store, metrics, dataset or None, device=str(resolve_device(device)),
                             recompute=recompute, resamples=resamples, permutations=permutations, seed=seed,
                             progress=lambda k, n: progress.update(t, total=n, completed=k))
    for job in counts["jobs"]:
        flag = "[green]passed[/green]" if job["passed"] else "[red]FAILED[/red]"
        inv = ", ".join(f"{k} {v:.1e}" for k, v in job.items()
                        if k in ("orthogonal", "isotropic-scaling", "translation", "grid_vs_fn") and v is not None)
        self_max = "undefined" if job["self_max"] is None else f"{job['self_max']:.1e}"
        extra = f"; {job['ci_kind']} intervals" if job.get("ci_kind") else ""
        if job.get("outside_interval"):
            extra += f"; {job['outside_interval']} values outside their own interval"
        if job.get("degenerate"):
            extra += (f"; {len(job['degenerate'])} degenerate representations (constant or non-finite; "
                      "their rows are NaN with a reason)")
        err_console.print(f"checks {job['dataset']}/{job['metric']} ({job['pairs']} layer pairs, n {job['n']}, "
                          f"{job['path']} path, {job['seconds']:.1f} s): {flag}; |self - 1| {self_max}; {inv}"
                          + extra)
    if counts.get("skipped_runs"):
        err_console.print(f"[yellow]warning:[/yellow] {len(counts['skipped_runs'])} run(s) left out because their "
                          "representations are unreadable (named above); rerun the grid to retrain them, then this "
                          "command", highlight=False, soft_wrap=True)
    out_console.print(f"similarity: {counts['pairs']} run pairs computed in {counts['seconds']:.1f} s "
                      f"({', '.join(metric)}; {resamples} resamples, {permutations} permutations); "
                      f"stored under {out / 'similarity'}")


leaderboard_app = typer.Typer(invoke_without_command=True, no_args_is_help=False, rich_markup_mode=None,
                              help="Leaderboards from a results root or an exported folder; `compare A B`.")
app.add_typer(leaderboard_app, name="leaderboard")
FORMATS = ("html", "md", "rich")


def _write_page(path: Path, text: str) -> None:
    from wsbench.tables import write_text
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)
    err_console.print(f"wrote {path}")


def _is_folder(output: str) -> bool:
    p = Path(output)
    return output.endswith(("/", os.sep)) or p.is_dir() or p.suffix == ""


def _dataset_loader(data_dir: Optional[Path]):
    """Images for the sample analysis come from the dataset plugin (the page itself stays pure)."""
    from wsbench.task import default_data_dir

    def load(name):
        spec = _registry().dataset(name)
        if spec.networks is not None or spec.load is None:
            raise WsbenchError(f"the samples of {name} are networks, not images")
        return spec.load(Path(data_dir) if data_dir else default_data_dir())
    return load


def _metric_of(metric: Optional[str], sets: list, what: str) -> tuple[str, Optional[tuple[float, float]]]:
    """The similarity metric a leaderboard shows, and its declared range (to clip intervals to).

    Default: the metric an export was made with, else ``cka`` when stored (or nothing is), else the
    only (first) metric stored. A name that is neither stored nor installed is an error; an
    installed one with no stored rows is a warning saying how to compute them.
    """
    stored = sorted({s["metric"] for t in sets for s in t.similarity if s.get("metric")})
    if metric is None:
        remembered = [t.manifest["metric"] for t in sets if t.manifest.get("metric")]
        if remembered and (remembered[0] in stored or not stored):
            metric = remembered[0]
        else:
            metric = "cka" if "cka" in stored or not stored else stored[0]
    reg = _registry()
    if metric not in stored and metric not in reg.metrics:
        raise WsbenchError(f"unknown metric {metric!r}; metrics stored in {what}: {', '.join(stored) or '(none)'}; "
                           f"installed: {', '.join(sorted(reg.metrics))}")
    if metric not in stored and stored:
        err_console.print(f"[yellow]warning:[/yellow] no {metric} similarity in {what} (stored: {', '.join(stored)}); "
                          f"compute it with `wsbench similarity --metric {metric}`", highlight=False, soft_wrap=True)
    spec = reg.metrics.get(metric)
    return metric, (tuple(spec.range) if spec is not None and spec.range is not None else None)


@leaderboard_app.callback(invoke_without_command=True)
def leaderboard(ctx: typer.Context,
                out: Path = typer.Option(Path("results"), "--results", "--out", help="Results root, or a folder "
                                         "exported with --output DIR/ (re-rendered from its tables); --out: "
                                         "older alias."),
                format: str = typer.Option("rich", "--format", help="rich (terminal), md or html."),
                metric: Optional[str] = typer.Option(None, "--metric", help="Similarity metric of the stability "
                                                     "and similarity tables (`wsbench plugins` lists them); default: "
                                                     "an export's own metric, else cka, else the one stored."),
                calibrated: bool = typer.Option(False, "--calibrated", help="Rank and draw the null-calibrated "
                                                "similarity, (value - null mean) / (1 - null mean), instead of the "
                                                "raw value."),
                output: Optional[str] = typer.Option(None, "--output", help="FILE.md or FILE.html: write that page; "
                                                     "DIR/: export Markdown, HTML and the small tables."),
                title: Optional[str] = typer.Option(None, "--title", help="Page title."),
                data_dir: Optional[Path] = DataOpt,
                images: bool = typer.Option(True, "--images/--no-images", help="Show the split samples' images "
                                            "(read from the dataset plugin).")):
    """Ranked test scores (accuracy; Kendall's tau for scalar targets), cross-seed stability,
    cross-architecture similarity and the sample analysis."""
    if ctx.invoked_subcommand is not None:
        return
    from wsbench import reporting as lb
    from wsbench.reporting import export
    from wsbench.reporting.html import render_html
    if format not in FORMATS:
        raise WsbenchError(f"unknown format {format!r}; known formats: {', '.join(FORMATS)}")
    tables = export.load(out)
    if not tables.runs:
        raise WsbenchError(f"no runs under {out}; run `wsbench grid` first or pass --results")
    metric, value_range = _metric_of(metric, [tables], str(out))
    from wsbench.grid import applicability_notes
    board = lb.build(tables.runs, tables.similarity, metric=metric, predictions=tables.predictions,
                     value_range=value_range, calibrated=calibrated,
                     not_applicable=applicability_notes(tables.runs, _registry()))
    title = title or tables.manifest.get("title") or "wsbench leaderboard"
    want_html = format == "html" or (output is not None and (_is_folder(output) or output.endswith(".html")))
    if (images and want_html) or (output is not None and _is_folder(output) and images):
        export.attach_images(tables, board, _dataset_loader(data_dir),
                             warn=lambda m: err_console.print(f"[yellow]warning:[/yellow] {m}", highlight=False))
    if output is not None and _is_folder(output):
        written = export.write_export(tables, board, Path(output), title)
        err_console.print(f"exported {len(written)} files to {output} (leaderboard.md, index.html, tables/)")
        return
    if output is not None:
        path = Path(output)
        if path.suffix == ".html":
            _write_page(path, render_html(board, title=title, images=tables.images, classes=tables.classes,
                                          source=tables.source))
        else:
            _write_page(path, lb.render_markdown(board, title=title))
    if format == "md":
        sys.stdout.write(lb.render_markdown(board, title=title))
    elif format == "html":
        if output is None:
            sys.stdout.write(render_html(board, title=title, images=tables.images, classes=tables.classes,
                                         source=tables.source))
    elif output is None:
        for item in lb.render_rich(board):
            out_console.print(item)


@leaderboard_app.command("compare")
def leaderboard_compare(a: Path = typer.Argument(..., help="Results root or exported leaderboard (the reference)."),
                        b: Path = typer.Argument(..., help="Results root or exported leaderboard (compared to A)."),
                        format: str = typer.Option("rich", "--format", help="rich or md."),
                        metric: Optional[str] = typer.Option(None, "--metric", help="Similarity metric (default: "
                                                             "as `wsbench leaderboard`)."),
                        output: Optional[Path] = typer.Option(None, "--output", help="Write Markdown to this file.")):
    """Two result sets side by side per dataset and architecture: differences B - A with 95 % intervals."""
    from wsbench import reporting as lb
    from wsbench.reporting import export
    if format not in ("md", "rich"):
        raise WsbenchError(f"unknown format {format!r}; known formats: md, rich")
    ta, tb = export.load(a), export.load(b)
    metric, value_range = _metric_of(metric, [ta, tb], f"{a} and {b}")
    names = [p.name or str(p) for p in (a, b)]
    if names[0] == names[1]:
        names = [str(a), str(b)]
    # Labelled together: a row is one (dataset, architecture, settings) on both sides.
    comparison = lb.compare_sets(ta.runs, ta.similarity, tb.runs, tb.similarity, names[0], names[1], metric=metric,
                                 value_range=value_range)
    if output is not None:
        _write_page(output, lb.render_comparison_markdown(comparison))
    if format == "md":
        sys.stdout.write(lb.render_comparison_markdown(comparison))
    elif output is None:
        for item in lb.render_comparison_rich(comparison):
            out_console.print(item)


plugins_app = typer.Typer(invoke_without_command=True, rich_markup_mode=None, help="List installed plugins.")
app.add_typer(plugins_app, name="plugins")


@plugins_app.callback(invoke_without_command=True)
def plugins(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Every architecture, dataset and metric found, and who provides it."""
    if ctx.invoked_subcommand is not None:
        return
    reg = _registry()
    rows = []
    for s in reg.all_specs():
        row = {"name": s.name, "kind": s.kind, "distribution": s.distribution, "version": s.version,
               "description": s.description}
        if s.kind == "architecture":
            row["view"] = s.view
        if s.kind == "dataset":
            row.update(target=s.target, views=list(s.offered_views))
            if s.networks is not None:
                row["zoo_recipes"] = {dev: dict(r) for dev, r in s.zoo_recipes.items()}
            else:
                row["inr_recipe"] = dict(s.inr_recipe)
        if s.kind == "metric":
            row.update(estimator=s.estimator, higher_is_better=s.higher_is_better, symmetric=s.symmetric,
                       invariances=list(s.invariances))
        rows.append(row)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    t = Table(title="wsbench plugins")
    for col in ("kind", "name", "distribution", "version", "details", "description"):
        t.add_column(col)
    for r in rows:
        details = r.get("view") or r.get("estimator") or (f"{r['target']}: {', '.join(r['views'])}"
                                                           if r["kind"] == "dataset" else "")
        t.add_row(r["kind"], r["name"], r["distribution"], r["version"], details, r["description"])
    out_console.print(t)


@plugins_app.command("check")
def plugins_check(name: str = typer.Argument(..., help="Architecture to check."),
                  device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
                  set_: List[str] = SetOpt,
                  as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Conformance check of an architecture plugin: builds, one step lowers the loss, layers, determinism."""
    from wsbench.conformance import check_architecture
    from wsbench.train import resolve_device
    spec = _registry().architecture(name)
    results = check_architecture(spec, device=str(resolve_device(device)), overrides=parse_overrides(set_))
    failed = [r for r in results if not r.ok]
    if as_json:
        sys.stdout.write(json.dumps([r.__dict__ for r in results], indent=2) + "\n")
    else:
        t = Table(title=f"conformance of {name} ({spec.distribution} {spec.version})")
        for col in ("check", "result", "detail"):
            t.add_column(col)
        for r in results:
            t.add_row(r.name, "[green]pass[/green]" if r.ok else "[red]FAIL[/red]", r.detail)
        out_console.print(t)
    if failed:
        err_console.print(f"[bold red]{name}: {len(failed)} check(s) failed:[/bold red] "
                          + "; ".join(f"{r.name}: {r.detail}" for r in failed), highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    out_console.print(f"{name}: all {len(results)} checks passed")


@inrs_app.command("build")
def inrs_build(dataset: str = typer.Option(..., "--dataset"), data_dir: Optional[Path] = DataOpt,
               cache_dir: Optional[Path] = CacheOpt, device: str = DeviceOpt, limit: Optional[int] = LimitOpt,
               recipe: List[str] = RecipeOpt):
    """Fit (or resume) the INR zoo of a dataset and print its PSNR summary; a cached zoo that fails
    its integrity check (truncated, edited, unreadable manifest) is fitted again."""
    _build_zoo(dataset, data_dir, cache_dir, device, limit, recipe)


@zoo_app.command("build")
def zoo_build(dataset: str = typer.Option(..., "--dataset", help="Any dataset: an INR zoo is fitted, a CNN zoo "
                                          "(cnn-mnist, cnn-fmnist, cnn-cifar10gs, each also -mixed) trained."),
              data_dir: Optional[Path] = DataOpt, cache_dir: Optional[Path] = CacheOpt, device: str = DeviceOpt,
              limit: Optional[int] = LimitOpt, recipe: List[str] = RecipeOpt):
    """Build (or resume after a kill, or reuse) the zoo of a dataset and print its summary: an INR
    zoo's PSNR, a CNN zoo's target spread. A cached zoo that fails its integrity check is built again.
    A CNN zoo's recipe (`--recipe zoo_size=N`, `epochs`, `train_subset`, ...) defaults by device: a
    small zoo on a CPU, a Small-CNN-Zoo-sized one on a GPU (`wsbench plugins --json` lists them)."""
    _build_zoo(dataset, data_dir, cache_dir, device, limit, recipe)


def _build_zoo(dataset: str, data_dir: Optional[Path], cache_dir: Optional[Path], device: str,
               limit: Optional[int], recipe: List[str]) -> None:
    import time

    import numpy as np

    from wsbench.runner import Runner
    from wsbench.specs import MixedNetworks
    settings = _settings(Path("results"), data_dir, cache_dir, device, limit, None, [], None, recipe)
    registry = _registry()
    spec = registry.dataset(dataset)
    runner = Runner(registry, settings)
    runner.recipe(dataset)  # a bad --recipe key fails before any work
    t0 = time.perf_counter()
    with _progress() as progress:
        task = runner.task(dataset, progress=zoo_bar(progress, dataset), repair=True)
    if spec.networks is not None:
        t = task.labels
        splits = ", ".join(f"{k} {len(v)}" for k, v in task.splits.items())
        net = task.info.network
        size = (f"{len(net.layouts)} architectures of {min(s.num_params for s in net.layouts)} to {net.max_params} "
                "parameters" if isinstance(net, MixedNetworks) else f"{task.info.weight_dim} parameters each")
        out_console.print(f"{dataset}: {len(task.ids)} networks ({size}; "
                          f"views {', '.join(task.info.views)}), zoo key {task.zoo_key[:16]}, "
                          f"ready in {time.perf_counter() - t0:.1f} s\nsplits: {splits}\n"
                          f"target: mean {t.mean():.4f}, std {t.std():.4f}, min {t.min():.4f}, "
                          f"median {np.median(t):.4f}, max {t.max():.4f}", highlight=False)
        return
    zoo = task.zoo
    assert zoo is not None  # a built INR task carries its zoo
    m = zoo.manifest
    p = m["psnr"]
    out_console.print(f"{dataset}: {m['count']} INRs ({m['num_params']} parameters each) at {zoo.path}\n"
                      f"PSNR dB: mean {p['mean']:.2f}, std {p['std']:.2f}, 5th percentile {p['p5']:.2f}, "
                      f"min {p['min']:.2f}, max {p['max']:.2f}")


@zoo_app.command("info")
@inrs_app.command("info")
def inrs_info(zoo: Optional[str] = typer.Argument(None, help="A zoo's key prefix or folder name: print its manifest."),
              cache_dir: Optional[Path] = CacheOpt, as_json: bool = typer.Option(False, "--json")):
    """List the cached zoos (INR and CNN zoos, built and imported), or print one zoo's manifest."""
    from wsbench.task import default_cache_dir
    from wsbench.zoo import list_zoos
    root = cache_dir or default_cache_dir()
    zoos = list_zoos(root)
    if zoo is not None:
        hits = [z for z in zoos if str(z["key"]).startswith(zoo) or Path(z["path"]).name.startswith(zoo)]
        if len(hits) != 1:
            known = ", ".join(Path(z["path"]).name for z in zoos) or "(none)"
            raise WsbenchError(f"{'no' if not hits else 'more than one'} cached zoo matches {zoo!r} under {root}; "
                               f"zoos: {known}")
        hit = hits[0]
        if "broken" not in hit:  # one zoo: its arrays are hashed too
            hit = next(z for z in list_zoos(root, full=True) if z["path"] == hit["path"])
        sys.stdout.write(json.dumps(hit, indent=2, sort_keys=True) + "\n")
        if "broken" in hit:
            raise WsbenchError(f"INR zoo {hit['path']} is damaged: {hit['broken']}; {hit['fix']}")
        return
    if as_json:
        sys.stdout.write(json.dumps(zoos, indent=2) + "\n")
        return
    if not zoos:
        out_console.print(f"no INR zoos cached under {root}; build one with `wsbench inrs build --dataset NAME`")
        return
    t = Table(title=f"zoos in {root}")
    for col in ("dataset", "count", "spec", "recipe", "PSNR mean", "PSNR p5", "PSNR min", "device", "fit s", "key"):
        t.add_column(col)
    for z in zoos:
        if "broken" in z:
            t.add_row(str(z.get("dataset", "?")), "[red]BROKEN[/red]", "-", "(see below)", "-", "-", "-", "-", "-",
                      str(z["key"])[:16])
            continue
        r, p = z.get("recipe") or {}, z.get("psnr") or {}
        if z.get("kind") == "cnn":  # a CNN zoo (wsbench.cnnzoo): no PSNR; its recipe is epochs and a pool
            spec = "cnn " + "-".join(str(c) for c in z["spec"]["channels"])
            if z.get("mixed"):  # a zoo of mixed architectures: the depths and widths its networks have
                m = z["mixed"]
                spec = (f"cnn mixed: {'/'.join(map(str, m['depths']))} layers of "
                        f"{'/'.join(map(str, m['widths']))} filters")
            marks = r.get("checkpoint_epochs") or []
            recipe = (f"imported ({z['imported']})" if z.get("imported")
                      else f"{r.get('epochs')} epochs, pool {r.get('train_subset') or 'all'}"
                           + (f", checkpoints at epochs {','.join(map(str, marks))}" if marks else ""))
            t.add_row(z["dataset"], str(z["count"]), spec, recipe, "-", "-", "-", str(z.get("device", "-")),
                      str(z.get("train_seconds", "-")), z["key"][:16])
            continue
        spec = "-".join(str(d) for d in [z["spec"]["in_dim"], *z["spec"]["hidden"], z["spec"]["out_dim"]])
        recipe = f"imported ({r['imported']})" if r.get("imported") else f"{r.get('steps')} steps, lr {r.get('lr')}"
        db = [f"{p[k]:.2f}" if k in p else "-" for k in ("mean", "p5", "min")]
        t.add_row(z["dataset"], str(z["count"]), spec, recipe, *db, str(z.get("device", "-")),
                  str(z.get("fit_seconds", "-")), z["key"][:16])
    out_console.print(t)
    for z in zoos:
        if "broken" in z:
            err_console.print(f"[yellow]warning:[/yellow] INR zoo {z['path']} is damaged: {z['broken']}; {z['fix']}",
                              highlight=False, soft_wrap=True)
    out_console.print("`wsbench inrs info KEY` prints a zoo's whole manifest (checksums, splits, recipe, versions)")


@inrs_app.command("import")
def inrs_import(root: Path = typer.Argument(..., help="Folder holding the zoo's .pth files."),
                layout: str = typer.Option(..., "--layout", help="dwsnets or nfn."),
                name: Optional[str] = typer.Option(None, "--name", help="Name of the imported zoo."),
                splits: Optional[Path] = typer.Option(None, "--splits", help="DWSNets splits JSON (default: found "
                                                      "in ROOT)."),
                w0: float = typer.Option(30.0, "--w0", help="The SIREN's w0, recorded in the spec."),
                cache_dir: Optional[Path] = CacheOpt):
    """Import an existing INR zoo (DWSNets or NFN layout) into the cache; files are loaded weights-only."""
    from wsbench.importers import import_zoo
    from wsbench.task import default_cache_dir
    with _progress() as progress:
        task = progress.add_task(f"import {layout}", total=None, info="")
        zoo = import_zoo(root, layout, cache_dir or default_cache_dir(), name=name, w0=w0, splits_file=splits,
                         progress=lambda k, n: progress.update(task, total=n, completed=k))
    m = zoo.manifest
    spec = "-".join(str(d) for d in [m["spec"]["in_dim"], *m["spec"]["hidden"], m["spec"]["out_dim"]])
    out_console.print(f"imported {m['count']} INRs ({spec}, {m['num_params']} parameters each; splits "
                      f"{m['splits']}) to {zoo.path}")


@zoo_app.command("import")
def zoo_import(root: Path = typer.Argument(..., help="One dataset folder of the release (weights.npy, metrics.csv)."),
               layout: str = typer.Option("small-cnn-zoo", "--layout", help="small-cnn-zoo (Unterthiner et al. "
                                          "2020's public release)."),
               name: str = typer.Option(..., "--name", help="Name of the imported zoo, e.g. cifar10gs."),
               image_size: int = typer.Option(32, "--image-size", help="Input height and width of its CNNs (28 for "
                                              "MNIST and Fashion-MNIST, 32 for CIFAR-10 and SVHN)."),
               all_checkpoints: bool = typer.Option(False, "--all-checkpoints", help="Keep every checkpoint row, "
                                                    "not only each CNN's last."),
               cache_dir: Optional[Path] = CacheOpt):
    """Import a CNN zoo in the Small CNN Zoo's release layout into the cache (weights.npy read without
    pickles, metrics CSV with the csv module); train models on it with `--dataset cnn-imported --recipe
    zoo=imported-NAME`."""
    import numpy as np

    from wsbench.importers import import_small_cnn_zoo
    from wsbench.task import default_cache_dir
    if layout != "small-cnn-zoo":
        raise WsbenchError(f"unknown CNN zoo layout {layout!r}; known layouts: small-cnn-zoo")
    if not Path(root).is_dir():
        raise WsbenchError(f"{root} is not a folder; pass one dataset folder of the release")
    zoo = import_small_cnn_zoo(root, cache_dir or default_cache_dir(), name, final_only=not all_checkpoints,
                               image_size=image_size)
    t = zoo.targets["test_acc"]
    out_console.print(f"imported {len(zoo.ids)} CNNs ({zoo.spec.num_params} parameters each) as {zoo.path.name}; "
                      f"test accuracy median {float(np.nanmedian(t)):.4f}; use --dataset cnn-imported --recipe "
                      f"zoo={zoo.path.name}", highlight=False)


@app.command()
def plot(out: Path = typer.Option(Path("results"), "--results", "--out", help="Results root, or an exported "
                                  "leaderboard folder (--out: older alias)."),
         output: Path = typer.Option(Path("figures"), "--output", help="Folder for the figures."),
         metric: str = typer.Option("cka", "--metric", help="Similarity metric of the stability and heatmap "
                                    "figures."),
         formats: List[str] = typer.Option(["pdf", "png"], "--format", help="pdf and/or png; repeatable."),
         data_dir: Optional[Path] = DataOpt):
    """Paper figures as PDF and PNG (pip install 'wsbench[plot]'): accuracy with intervals and chance
    (accuracy.*; datasets with a scalar target: their primary score, scores.*), cross-seed stability
    per layer (stability.*), cross-architecture heatmaps per dataset (cross-DATASET.*)."""
    from wsbench import reporting as lb
    from wsbench.reporting import export, figures
    figures.pyplot()  # a missing matplotlib fails before any work
    tables = export.load(out)
    if not tables.runs:
        raise WsbenchError(f"no runs under {out}; run `wsbench grid` first or pass --results")
    board = lb.build(tables.runs, tables.similarity, metric=metric, predictions=tables.predictions)
    classes = dict(tables.classes)
    if not tables.predictions:  # the chance level needs the classes: from the dataset plugin then
        for ds in {r["dataset"] for r in tables.runs}:
            try:
                classes.setdefault(ds, list(_dataset_loader(data_dir)(ds).classes))
            except Exception:  # the dataset cannot be loaded here: no chance line for it
                continue
    chance = figures.chance_levels(tables.predictions, classes)
    written = figures.write_figures(board, figures.seed_scores(tables.runs, board), chance, output, formats)
    for path in written:
        out_console.print(f"wrote {path}", highlight=False)


model_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Saved models (--save-models): reload one, score it, extract its representations.")
app.add_typer(model_app, name="model")


@model_app.command("eval")
def model_eval(run_id: str = typer.Argument(..., help="Run id of a saved model (a unique prefix is enough)."),
               out: Path = OutOpt,
               split: str = typer.Option("test", "--split", help="train, val or test."),
               representations: Optional[Path] = typer.Option(None, "--representations", help="Write every named "
                                                              "layer's representation of the split to this Parquet "
                                                              "file (the representations table's columns)."),
               predictions: Optional[Path] = typer.Option(None, "--predictions", help="Write the per-sample "
                                                          "predictions of the split to this Parquet file."),
               data_dir: Optional[Path] = DataOpt, cache_dir: Optional[Path] = CacheOpt, device: str = DeviceOpt,
               as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")):
    """Reload a saved model with its task and score it on a split (the test split reproduces the stored
    test accuracy)."""
    from wsbench.models import evaluate
    from wsbench.tables import prediction_table, representation_table, write_parquet
    ev = evaluate(out, run_id, split, registry=_registry(), data_dir=data_dir, cache_dir=cache_dir, device=device,
                  want_layers=representations is not None)
    written = {}
    if representations is not None:
        written["representations"] = str(write_parquet(representations, representation_table(
            ev.run_id, ev.sample_ids, ev.layers)))
    if predictions is not None:
        written["predictions"] = str(write_parquet(predictions, prediction_table(
            ev.run_id, ev.sample_ids, ev.labels, ev.preds, ev.confidence, scalar=ev.scalar)))
    if as_json:
        _print_json({"run_id": ev.run_id, "dataset": ev.dataset, "arch": ev.arch, "split": ev.split,
                     "n": len(ev.labels), "accuracy": None if ev.scalar else ev.accuracy, "scores": ev.scores,
                     "stored_test_acc": ev.stored_test_acc, "stored_test_score": ev.stored_test_score, **written})
        return
    name, value = next(iter(ev.scores.items()))
    stored = "" if ev.stored_test_score is None and ev.stored_test_acc is None else \
        f" (stored test {name} {fmt_score(name, ev.stored_test_score if ev.scalar else ev.stored_test_acc)})"
    out_console.print(f"{ev.dataset}/{ev.arch} run {ev.run_id}: {ev.split} {name} {fmt_score(name, value)} on "
                      f"{len(ev.labels)} samples{stored}", highlight=False)
    for what, path in written.items():
        err_console.print(f"wrote {what} to {path}", highlight=False)


study_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Run a whole study: zoos, grid, similarity, leaderboard.")
app.add_typer(study_app, name="study")


@study_app.command("list")
def study_list():
    """The built-in studies."""
    from wsbench.study import known_studies, load_study
    for name in known_studies():
        s = load_study(name)
        out_console.print(f"{name}: {s.title} ({', '.join(s.datasets)}; {', '.join(s.architectures)}; "
                          f"{s.seeds} seeds)", highlight=False)


@study_app.command("run")
def study_run(name: str = typer.Argument(..., help="A built-in study (`wsbench study list`) or a study .toml file."),
              dataset: List[str] = typer.Option([], "--dataset", help="Only these of the study's datasets."),
              out: Path = OutOpt, data_dir: Optional[Path] = DataOpt, cache_dir: Optional[Path] = CacheOpt,
              device: str = DeviceOpt, limit: Optional[int] = LimitOpt, epochs: Optional[int] = EpochsOpt,
              seeds: Optional[str] = typer.Option(None, "--seeds", help="Override the study's seeds (count or list)."),
              resamples: Optional[int] = typer.Option(None, "--resamples", help="Override bootstrap resamples."),
              workers: int = typer.Option(1, "--workers", help="1 runs the grid's cells in this process, N > 1 "
                                          "in N worker processes sharing the results root (and GPU)."),
              recipe: List[str] = RecipeOpt,
              export_to: Optional[str] = typer.Option(None, "--export", help="Leaderboard export folder "
                                                      "(default: the study's); 'none' to skip."),
              save_models: bool = SaveModelsOpt, track: Optional[str] = TrackOpt, as_json: bool = JsonOpt):
    """Run a study end to end, resuming where it stopped: per dataset the INR zoo, the seed x
    architecture grid and the similarity; then the leaderboard export."""
    from wsbench import reporting as lb
    from wsbench.progress import StudyDisplay
    from wsbench.study import load_study, run_study
    study = load_study(name)
    reg = _registry()
    seed_list = parse_seeds(seeds if seeds is not None else str(study.seeds))
    settings = _settings(out, data_dir, cache_dir, device, limit, epochs, [], None, recipe, save_models, track)
    with StudyDisplay(err_console) as display:
        report = run_study(study, settings, datasets=dataset or None, seeds=seed_list, workers=workers,
                           resamples=resamples, export_to=export_to, registry=reg,
                           images=_dataset_loader(data_dir), on_event=display)
    if report.exported is not None:
        err_console.print(f"exported {len(report.exported)} files to {report.export_to}")
        if not as_json:
            for item in lb.render_rich(report.board):
                out_console.print(item)
    if as_json:
        _print_json(_summary(report.outcomes, settings, study=study.name,
                             export=None if report.exported is None else str(report.export_to)))
    if report.failed_cells:
        err_console.print(f"{report.failed_cells} grid cells failed; see `wsbench leaderboard --results {out}`")
        raise typer.Exit(1)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """wsbench's own warnings (damaged files skipped, ...) as one line; others as Python prints them."""
    if issubclass(category, WsbenchWarning):
        err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def _framework_exceptions() -> tuple[tuple, tuple, tuple]:
    """(exit, usage error, abort) exception classes of the CLI framework: typer's own (it vendors
    click since 0.2x), plus click's where an older typer builds on click itself."""
    exits: list[type] = [typer.Exit]
    errors: list[type] = [typer.TyperException] if hasattr(typer, "TyperException") else []
    aborts: list[type] = [typer.Abort]
    try:
        import click
        exits.append(click.exceptions.Exit)
        errors.append(click.exceptions.ClickException)
        aborts.append(click.exceptions.Abort)
    except ImportError:
        pass
    return tuple(exits), tuple(errors), tuple(aborts)


def _show_usage_error(exc: Exception) -> None:
    if type(exc).__name__ == "NoArgsIsHelpError":  # the help is the message
        exc.show()  # type: ignore[attr-defined]
        return
    try:
        from typer import rich_utils
        rich_utils.rich_format_error(exc)  # type: ignore[arg-type]
    except Exception:  # typer without rich formatting
        exc.show()  # type: ignore[attr-defined]


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: one-line errors, tracebacks only with --debug.

    The app runs outside click's standalone mode, so every exception reaches the handlers here
    (standalone mode turns an EOFError into a bare ``Aborted.`` and Ctrl-C into a silent exit 130):
    usage errors exit 2 with click's message, :class:`WsbenchError` 2 with its one line, Ctrl-C 130
    saying what is kept and the command that resumes, anything else 1 with its type and message.
    ``--debug`` shows the traceback of every one of them.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = False
    warnings.showwarning = _show_warning
    command = typer.main.get_command(app)
    exits, usage_errors, aborts = _framework_exceptions()
    code = 0
    try:
        try:
            with command.make_context("wsbench", args) as ctx:
                command.invoke(ctx)
        except exits as exc:  # --help, --version, typer.Exit(n)
            code = exc.exit_code
    except usage_errors as exc:  # a bad option, a missing argument: exit 2 with the framework's message
        if _state["debug"]:
            traceback.print_exc()
        _show_usage_error(exc)
        sys.exit(getattr(exc, "exit_code", 2))
    except aborts:
        err_console.print("aborted")
        sys.exit(1)
    except KeyboardInterrupt:
        if _state["debug"]:
            traceback.print_exc()
        err_console.print("interrupted: everything stored so far is kept (finished runs, similarity pairs, the "
                          "fitted chunks of an INR zoo); rerun the same command to resume:\n  "
                          + shlex.join(["wsbench", *args]), highlight=False, soft_wrap=True)
        sys.exit(130)
    except WsbenchError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except PermissionError as exc:
        if _state["debug"]:
            raise
        where = exc.filename or "a file"
        err_console.print(f"[bold red]error:[/bold red] permission denied writing or reading {where}; choose a "
                          "folder you can write to (--out, --cache-dir, --output) or fix its permissions",
                          highlight=False, soft_wrap=True)
        sys.exit(2)
    except BrokenPipeError:
        sys.exit(1)  # the reader of our output went away (e.g. `| head`)
    except Exception as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/bold red] {type(exc).__name__}: {escape(str(exc))} (rerun with --debug "
                          "for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)
    sys.exit(code)
