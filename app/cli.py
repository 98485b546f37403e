"""`folio`: the app with no arguments; `folio ask|bench|models`, `folio --self-test`.

Each subcommand lives in its own module with `add_arguments(parser)` and `run(args) -> int`,
imported only when used so `folio ask` never loads Qt and `folio` (the app) never loads
the benchmarks.
"""

import argparse
import importlib
import sys

from app import __version__, blas, log

SUBCOMMANDS = {
    "ask": ("app.ask", "ask a model one question; the answer streams to stdout"),
    "bench": ("app.bench", "benchmarks: generate, quality, attention, reopen"),
    "models": ("app.models_cli", "list, search, download, remove and import models"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="folio", description="Private, offline, long-context chat.")
    parser.add_argument("--version", action="version", version=f"Folio {__version__}")
    parser.add_argument("--self-test", action="store_true", help="check this installation and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="also log to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            p.set_defaults(_missing=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # a real launch, not a call from tests: safe to re-exec with OpenBLAS
        argv = sys.argv[1:]
        blas.reexec_with_blas(argv)
    args = build_parser().parse_args(argv)
    logger = log.setup(verbose=args.verbose)
    if blas.preloaded():
        logger.info("using optimized BLAS %s", blas.preloaded())
    if args.self_test:
        from app import selftest

        return selftest.run()
    if args.command is None:
        from app.ui import app as gui

        return gui.main(argv)
    if getattr(args, "_missing", False):
        print(f"folio {args.command}: not available in this build", file=sys.stderr)
        return 2
    module = importlib.import_module(args._module)
    try:
        return module.run(args)
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
