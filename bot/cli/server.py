"""The commands that run Arbiter: `serve`, `worker`, `migrate` (and the start of `receive` and
`review`): logging, the start-up warnings, and the errors a process ends on."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from aiohttp import web

from bot import __version__, heap
from bot.app import create_app, create_worker_app
from bot.llm.status import model_status
from bot.logs import configure_logging, get_logger
from bot.runtime import Runtime
from bot.store import SchemaOutOfDate, StoreUnavailable
from config.settings import Settings, SettingsError, mask_url, unknown_settings

EXIT_USAGE = 2


def run_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run `serve`, `worker`, `migrate`, `receive` or `review`; the process exit code."""
    configure_logging(settings)
    log = get_logger(component="cli")
    for unknown in unknown_settings():
        log.warning(
            "unknown setting ignored (a typo?)",
            variable=unknown.variable,
            closest=unknown.closest,
            source=unknown.source,
        )
    try:
        if args.command == "serve":
            return asyncio.run(
                serve(settings, host=args.host, port=args.port, workers=not args.no_workers)
            )
        if args.command == "worker":
            return asyncio.run(work(settings))
        if args.command == "migrate":
            return asyncio.run(migrate(settings))
        if args.command == "receive":
            from bot.cli.receive import receive

            return asyncio.run(
                receive(
                    settings,
                    args.platform,
                    args.event,
                    args.file,
                    dry_run=args.dry_run,
                    store_url=args.store,
                )
            )
        if args.command == "review":
            from bot.cli.review import review_command

            return review_command(settings, args)
    except SettingsError as exc:
        print(f"arbiter: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (SchemaOutOfDate, StoreUnavailable, ValueError) as exc:
        log.error(str(exc))
        print(f"arbiter: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"no runner for the command {args.command!r}")


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def log_readiness(runtime: Runtime, *, platforms: bool = True) -> None:
    """What this process can do and what it lacks: platforms, the model, Redis."""
    log = get_logger(component="serve")
    if platforms:
        for status in runtime.platforms.values():
            if status.enabled:
                log.info("platform enabled", platform=status.name, auth=status.mode)
            else:
                log.warning(
                    "platform disabled: its webhook refuses every request",
                    platform=status.name,
                    missing=list(status.missing),
                )
    model = model_status(runtime.settings)
    if model.configured:
        log.info("model", model=model.model, provider=model.provider, base_url=model.base_url)
    else:
        log.warning(
            "no model configured: reviews and answers will fail until it is",
            model=model.model,
            provider=model.provider,
            missing=model.problem,
        )


async def _log_redis(runtime: Runtime) -> None:
    if runtime.redis is None or runtime.settings.redis_url is None:
        return
    log = get_logger(component="serve")
    url = mask_url(runtime.settings.redis_url)
    problem = await runtime.redis_problem()
    if problem is None:
        log.info("api rate limit shared through redis", redis=url)
    else:
        log.warning(
            "redis does not answer: the API rate limit is counted in this process alone "
            "until it does",
            redis=url,
            error=problem,
        )


async def serve(
    settings: Settings, *, host: str | None = None, port: int | None = None, workers: bool = True
) -> int:
    log = get_logger(component="serve")
    runtime = Runtime(settings, web_only=not workers, settle_heap=workers)
    await runtime.start()
    runner = web.AppRunner(create_app(runtime), access_log=None, handle_signals=False)
    await runner.setup()
    bind_host, bind_port = host or settings.host, port or settings.port
    try:
        site = web.TCPSite(runner, bind_host, bind_port, reuse_address=True)
        await _listen(site, "ARBITER_PORT (or --port)")
        log_readiness(runtime)
        await _log_redis(runtime)
        heap.settle("start")  # p99 at 500/s: 63-76 ms before, 22-25 ms after
        if workers:
            runtime.make_worker().start()
            # Where the work runs: the store's lease picks one such process to run each pass.
            # A web-only process leaves them to the workers (it would load the whole store).
            runtime.start_recovery()
        log.info(
            "listening",
            url=f"http://{bind_host}:{bind_port}",
            store=runtime.store.backend,
            workers=settings.worker_max_jobs if workers else 0,
            version=__version__,
        )
        await _stop_event().wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()  # stop taking deliveries first
        await runtime.close()  # then let running jobs finish within the grace period
    return 0


async def _listen(site: web.TCPSite, setting: str) -> None:
    try:
        await site.start()
    except OSError as exc:
        raise ValueError(
            f"cannot listen on {site.name}: {exc.strerror or exc}; choose another port with "
            f"{setting}"
        ) from exc


async def work(settings: Settings) -> int:
    log = get_logger(component="worker")
    runtime = Runtime(settings, settle_heap=True)
    await runtime.start()
    runner: web.AppRunner | None = None
    try:
        port = settings.worker_http_port
        if port:
            runner = web.AppRunner(
                create_worker_app(runtime), access_log=None, handle_signals=False
            )
            await runner.setup()
            site = web.TCPSite(runner, settings.host, port, reuse_address=True)
            await _listen(site, "ARBITER_WORKER_HTTP_PORT (0 for none)")
        log_readiness(runtime, platforms=False)
        heap.settle("start")
        runtime.make_worker().start()
        runtime.start_recovery()
        log.info(
            "worker running",
            store=runtime.store.backend,
            max_jobs=settings.worker_max_jobs,
            metrics=f"http://{settings.host}:{port}/metrics" if port else None,
        )
        await _stop_event().wait()
        log.info("shutting down")
    finally:
        if runner is not None:
            await runner.cleanup()
        await runtime.close()
    return 0


async def migrate(settings: Settings) -> int:
    runtime = Runtime(settings)
    await runtime.start(migrate=True)
    try:
        status = await runtime.store.schema_status()
    finally:
        await runtime.close()
    print(f"{runtime.store.backend} store at revision {status.current} (head {status.head})")
    return 0
