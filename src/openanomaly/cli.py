"""The ``openanomaly`` command. It only translates: arguments in, a service call, text out."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from openanomaly import __version__
from openanomaly.bootstrap import Container, bootstrap, engine_factory, model_server
from openanomaly.domain.durations import format_duration
from openanomaly.domain.records import InferResult, InferWindow, OutputSeries
from openanomaly.domain.spec import Pipeline
from openanomaly.domain.text import shorten
from openanomaly.domain.timeparse import iso, parse_time, with_iso_times
from openanomaly.errors import OpenAnomalyError
from openanomaly.ports import JobOutcome
from openanomaly.services.backtest import BacktestResult
from openanomaly.services.validation import PipelineValidator, check_range, pipeline_status
from openanomaly.settings import load_settings

HELP = (
    "Anomaly detection for Prometheus-compatible TSDBs.\n\n"
    "A pipeline (a PromQL query, a model, a schedule) is checked by `validate`, stored by "
    "`pipelines apply` and run by `run`; `train`, `infer` and `backtest` run one job now. "
    "Settings are OA_* environment variables: `settings` shows them."
)

TIMES = "now, -2h, now-2h, unix seconds or RFC 3339 (2026-11-21T10:00:00Z)"
"""The time formats ``--from``/``--to`` accept (``domain/timeparse.py``)."""
if TYPE_CHECKING:
    from openanomaly.adapters.prometheus.probe import Finding

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help=HELP,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
pipelines_app = typer.Typer(no_args_is_help=True, help="Manage the stored pipelines.")
app.add_typer(pipelines_app, name="pipelines")
# Piped output is not cut at 80 columns: series names must stay whole for grep and scripts.
out = Console(width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 240)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # One line per HTTP request is noise at INFO; failures are reported by our own adapters.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # APScheduler logs every job it runs at INFO (445 of 740 lines in a demo run): DEBUG only.
    logging.getLogger("apscheduler").setLevel(
        logging.DEBUG if level == "DEBUG" else logging.WARNING
    )


def _container(follow: Path | None = None) -> Container:
    """The container of one command; use it in a ``with`` block, which closes it."""
    settings = load_settings()
    _setup_logging(settings.log_level)  # before bootstrap, which logs the detected TSDB
    return bootstrap(settings, follow=follow)


def _validator(c: Container | None = None) -> PipelineValidator:
    """The checks past the schema, against the engines installed here (no store is opened)."""
    settings = c.settings if c is not None else load_settings()
    engines = c.service.engines if c is not None else engine_factory(settings)
    return PipelineValidator(engines, max_steps=settings.max_range_steps)


def _check_range(c: Container, pipeline: str, start: int, end: int) -> None:
    step = c.service.pipelines.get(pipeline).step
    check_range(start, end, step, limit=c.settings.max_range_steps)


def _version(show: bool) -> None:
    if show:
        out.print(f"openanomaly {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


PipelineArg = Annotated[str, typer.Argument(help="Id of a stored pipeline.", show_default=False)]
FileArg = Annotated[Path, typer.Argument(help="A pipelines YAML file.", show_default=False)]


def _time(text: str) -> int:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def validate(
    file: FileArg,
    tsdb: Annotated[
        bool, typer.Option(help="Also check each query against the TSDB (OA_TSDB__*).")
    ] = False,
) -> None:
    """Check a pipelines file; print every error with its line and path. Exit 1 on errors;
    warnings (no series now, little history) leave the exit code 0."""
    from openanomaly.adapters.config.yaml_file import load_pipeline_file, validate_file

    problems = validate_file(file, check=_validator())
    for p in problems:
        err.print(p, markup=False, highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    if tsdb:
        findings = _tsdb_findings(load_pipeline_file(file))
        for f in findings:
            (out if f.level == "info" else err).print(
                str(f), markup=False, highlight=False, soft_wrap=True
            )
        if any(f.level == "error" for f in findings):
            raise typer.Exit(1)
    out.print(f"{file}: OK")


def _tsdb_findings(pipelines: list[Pipeline]) -> list[Finding]:
    from openanomaly.bootstrap import tsdb_probe

    settings = load_settings()
    _setup_logging(settings.log_level)
    with tsdb_probe(settings) as probe:
        return [f for p in pipelines for f in probe.check(p)]


@app.command()
def train(
    pipeline: PipelineArg,
    end: Annotated[
        str | None, typer.Option(help=f"End of the train window (default now): {TIMES}.")
    ] = None,
) -> None:
    """Train a pipeline now and make the new model version active."""
    with _container() as c:
        job = c.service.train_job(pipeline, _time(end) if end else None)
        version = c.service.run(job)
    out.print(json.dumps(with_iso_times(version), indent=2, default=str))


@app.command()
def infer(
    pipeline: PipelineArg,
    start: Annotated[
        str | None,
        typer.Option(
            "--from", help=f"Window start, exclusive (default: --to - infer.every): {TIMES}."
        ),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help=f"Window end, inclusive (default now): {TIMES}.")
    ] = None,
) -> None:
    """Score one window now (default: the window due since the last run) and write it."""
    with _container() as c:
        if start is None and end is None:
            window = c.service.due_infer(pipeline)
            if window is None:
                out.print("nothing new to score yet")
                return
        else:
            spec = c.service.pipelines.get(pipeline)
            to = _time(end) if end else int(c.service.clock())
            window = InferWindow(pipeline, _time(start) if start else to - spec.infer.every, to)
            _check_range(c, pipeline, window.start, window.end)
        # A window of this pipeline running elsewhere (the service's tick) is waited for, then
        # this run starts where it left off.
        result = c.service.run(window, wait=c.service.lease_ttl)
    assert isinstance(result, InferResult)
    out.print(
        f"{pipeline} ({iso(result.start)}, {iso(result.end)}]: {result.series} series, "
        f"{result.points} points, {result.anomalies} anomalous, {result.cold_series} cold-start, "
        f"{result.samples_written} samples written"
    )


@app.command()
def backtest(
    pipeline: PipelineArg,
    start: Annotated[str, typer.Option("--from", help=f"Start of the replayed range: {TIMES}.")],
    end: Annotated[str, typer.Option("--to", help=f"End of the replayed range: {TIMES}.")] = "now",
    write: Annotated[bool, typer.Option(help="Also remote-write the scores.")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="Save a PNG plot of the flagged series to this file.")
    ] = None,
) -> None:
    """Replay a range in production-sized steps and print what would have been flagged."""
    with _container() as c:
        _check_range(c, pipeline, _time(start), _time(end))
        result = _backtest(c, pipeline, _time(start), _time(end))
        table = Table(
            title=f"{pipeline}: {len(result.events)} anomalies in {len(result.batch)} series"
        )
        table.add_column("series", overflow="fold")
        for col in ("from", "to", "points", "peak score"):
            table.add_column(col, no_wrap=True)
        for e in result.events[:200]:
            table.add_row(e.series, iso(e.start), iso(e.end), str(e.points), f"{e.peak:.2f}")
        out.print(table)
        if write:
            _write_backtest(c, pipeline, result)
    if plot is not None:
        from openanomaly.plot import plot_backtest

        plot_backtest(result, plot)
        out.print(f"plot: {plot}")


def _write_backtest(c: Container, pipeline: str, result: BacktestResult) -> None:
    """Write the replayed scores and say how many the TSDB took and why not the others.

    Only VictoriaMetrics stores a rewrite (beside the live sample: both copies stay). Prometheus,
    Mimir and Thanos refuse a sample at a timestamp they hold, and with it the whole request:
    there the timestamps already held are read back first and left out (the live scores stay),
    and nothing older than the TSDB's write horizon (Prometheus: about an hour) is sent.
    """
    from openanomaly.domain.outputs import build_outputs
    from openanomaly.services.recovery import drop_before, missing, output_selector

    spec = c.service.pipelines.get(pipeline)
    outputs: Sequence[OutputSeries]
    outputs = build_outputs(result.batch.labels, result.batch.timestamps, result.scored, spec)
    outputs, too_old = drop_before(outputs, c.writer.oldest_accepted())
    flavor = getattr(c.writer, "flavor", None)  # a RemoteWriteWriter's resolved flavour
    held = 0
    if flavor != "victoriametrics" and c.samples is not None and result.batch.timestamps.size:
        ts = result.batch.timestamps
        present = c.samples.timestamps(output_selector(spec), int(ts[0]) - 1, int(ts[-1]))
        kept = missing(outputs, present)
        held = _count(outputs) - _count(kept)
        outputs = kept
    sent = c.writer.write(outputs) if outputs else 0
    out.print(f"wrote {sent} samples to a {flavor or 'TSDB'}")
    if too_old:
        out.print(f"not sent: {too_old} samples older than the TSDB accepts (out of bounds)")
    if held:
        out.print(
            f"not rewritten: {held} samples at timestamps the TSDB already holds (a {flavor} "
            "keeps the first sample of a timestamp; only VictoriaMetrics stores a rewrite)"
        )


def _count(series: Sequence[OutputSeries]) -> int:
    return sum(int(np.isfinite(s.values).sum()) for s in series)


def _backtest(c: Container, pipeline: str, start: int, end: int) -> BacktestResult:
    with Progress(
        TextColumn("backtest {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
    ) as bar:
        task = bar.add_task(pipeline, total=None)
        return c.service.backtest(
            pipeline,
            start,
            end,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )


@app.command()
def run(
    pipelines: Annotated[
        Path | None,
        typer.Option(
            help="Follow this pipelines file: applied to the store at start and when it "
            "changes; its pipelines removed from it are deleted (the API's are kept)."
        ),
    ] = None,
) -> None:
    """Run the standalone service: scheduler, workers and the HTTP API (health, /metrics)."""
    from openanomaly.runner import run_service

    with _container(follow=pipelines) as c:
        run_service(c)


@app.command("serve-model")
def serve_model(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default OA_MODEL_SERVER__HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default OA_MODEL_SERVER__PORT).")
    ] = None,
) -> None:
    """Serve the installed engines to `remote` engines elsewhere (e.g. Chronos on a GPU box).

    Clients must send OA_MODEL_SERVER__TOKEN when it is set; OA_MODEL_SERVER__STATE_KEY signs the
    fitted states handed out (default: derived from the token).
    """
    import uvicorn

    from openanomaly.engines.remote.server import create_model_app

    settings = load_settings()
    _setup_logging(settings.log_level)
    m = model_server(settings)
    host = host or m.host
    if m.token is None and host not in ("127.0.0.1", "::1", "localhost"):
        logging.getLogger(__name__).warning(
            "serving models on %s without a token: anyone who can reach it may use it", host
        )
    model_app = create_model_app(
        m.engines, token=m.token, state_key=m.state_key, cache_size=m.cache_size
    )
    uvicorn.run(
        model_app,
        host=host,
        port=m.port if port is None else port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


@app.command()
def settings() -> None:
    """Show the effective settings (secrets masked)."""
    out.print_json(json.dumps(load_settings().describe()))


@app.command()
def status(
    pipeline: Annotated[str | None, typer.Argument(help="one pipeline (default: all)")] = None,
) -> None:
    """Each pipeline's state, last train and infer, model, and points flagged in 24 hours."""
    from openanomaly.services.status import report

    with _container() as c:
        s = c.service
        specs = [s.pipelines.get(pipeline)] if pipeline else s.pipelines.list()
        reports = [
            report(
                p,
                validator=_validator(c),
                health=s.health,
                registry=s.registry,
                reader=s.reader,
                now=s.clock(),
            )
            for p in specs
        ]
    table = Table()
    for col in ("id", "state", "last train", "last infer", "model", "series", "flagged 24h"):
        table.add_column(col, no_wrap=True)
    table.add_column("last error", overflow="fold")
    for r in reports:
        m = r.model
        table.add_row(
            r.pipeline_id,
            r.state,
            _outcome(r.last_train),
            _outcome(r.last_infer),
            f"{m.version} ({_age(m.age_seconds)} old)" if m else "-",
            str(m.series) if m else "-",
            "?" if r.flagged_24h is None else str(r.flagged_24h),
            shorten(f"{iso(int(r.last_error_at))} {r.last_error}", 200) if r.last_error_at else "-",
        )
    out.print(table)


def _outcome(o: JobOutcome | None) -> str:
    return "-" if o is None else f"{iso(int(o.at))} {'ok' if o.ok else 'error'}"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@pipelines_app.command("list")
def pipelines_list() -> None:
    """The stored pipelines, each with its status (ok, or broken and why)."""
    with _container() as c:
        validator = _validator(c)
        statuses = [
            (p, pipeline_status(p, validator, c.service.health.reason(p.id)))
            for p in c.service.pipelines.list()
        ]
    table = Table()
    for col in ("id", "enabled", "model", "step", "query", "status"):
        table.add_column(col)
    for p, status in statuses:
        table.add_row(
            p.id,
            str(p.enabled),
            f"{p.model.engine}/{p.model.name or 'default'}",
            format_duration(p.step),
            shorten(p.query, 80),
            status.summary(),
        )
    out.print(table)


@pipelines_app.command("apply")
def pipelines_apply(file: FileArg) -> None:
    """Create or update the pipelines of a file in the store."""
    with _container() as c:
        _apply(c, file)


@pipelines_app.command("delete")
def pipelines_delete(pipeline: PipelineArg) -> None:
    """Delete a stored pipeline."""
    with _container() as c:
        c.service.pipelines.delete(pipeline)
    out.print(f"deleted {pipeline}")


def _apply(c: Container, file: Path) -> None:
    """All or nothing: a file with any problem is refused, every problem listed."""
    from openanomaly.adapters.config.yaml_file import load_pipeline_file

    for p in load_pipeline_file(file, check=_validator(c)):
        c.service.pipelines.put(p)
        out.print(f"applied {p.id}")


def main() -> None:
    try:
        app()
    except OpenAnomalyError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(2)
