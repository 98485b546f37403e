"""`folio models list|search|pull|rm|import`: the model manager from a terminal, each with --json."""

import json
import signal
import sys

from app import log
from app.engine.errors import FolioError
from app.units import duration, fmt, tokens_label

logger = log.get("models")


def add_arguments(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="installed models (or --catalog) with size and fit on this computer")
    ls.add_argument("--catalog", action="store_true", help="show the curated catalog instead")
    ls.add_argument("--context", type=int, default=None, help="context for the fit estimate (default: each model's maximum)")
    s = sub.add_parser("search", help="search the Hugging Face Hub for MLX models")
    s.add_argument("query")
    s.add_argument("--limit", type=int, default=20)
    ft = sub.add_parser("fit", help="will a Hub model fit here? asks the Hub for its size and config, downloads nothing")
    ft.add_argument("repo_id", help="e.g. mlx-community/Qwen3-8B-4bit")
    ft.add_argument("--context", type=int, default=None, help="context for the estimate (default: the model's maximum)")
    pl = sub.add_parser("pull", help="download a model (resumes an unfinished download); Ctrl-C pauses")
    pl.add_argument("repo_id", help="e.g. mlx-community/Qwen3-8B-4bit")
    rm = sub.add_parser("rm", help="delete a downloaded model, forget an imported one, or drop an unfinished download")
    rm.add_argument("name", help="repo id, or the imported folder")
    im = sub.add_parser("import", help="add a local model folder (checked: config, weights, tokenizer)")
    im.add_argument("folder")
    for q in (ls, s, ft, pl, rm, im):
        q.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    try:
        return ACTIONS[args.action](args)
    except FolioError as e:
        logger.warning("models %s failed: %s", args.action, e)
        if args.json:
            print(json.dumps({"error": str(e)}))
        else:
            print(f"folio: {e}", file=sys.stderr)
        return 1


def _fit(config, weights_bytes, context):
    from app.hub import fit

    try:
        return fit.estimate(config, weights_bytes, context=context)
    except FolioError:
        return None  # an odd config costs the estimate, not the listing


def _fit_cells(est) -> list:
    if est is None:
        return ["?", "?", "?"]
    return [f"{m.verdict} ({tokens_label(m.max_context)} max)" for m in est.modes]


def _list(args) -> int:
    from app.hub import catalog, download, installed
    from app.bench.common import table

    if args.catalog:
        rows, out = [], []
        for e in catalog.load():
            est = _fit(e.config, e.download_bytes, args.context)
            out.append({**e.as_dict(), "fit": est.as_dict() if est else None})
            rows.append([e.repo_id, e.parameters, fmt(e.download_bytes), tokens_label(e.context_length), e.license, *_fit_cells(est)])
        headers = ["catalog model", "params", "download", "context", "license", "fp16", "int4", "auto"]
    else:
        rows, out = [], []
        for m in installed.list_models():
            est = _fit(m.config, m.weights_bytes, args.context) if m.config and not m.problem else None
            out.append({**m.as_dict(), "fit": est.as_dict() if est else None})
            rows.append([m.name, m.source, fmt(m.size_bytes), *_fit_cells(est), m.problem or "ok"])
        headers = ["model", "source", "on disk", "fp16", "int4", "auto", "status"]
    pending = download.pending()
    if args.json:
        print(json.dumps({"catalog" if args.catalog else "installed": out, "unfinished_downloads": pending}, indent=2))
        return 0
    print(table(headers, rows) if rows else "No models installed. Try: folio models list --catalog")
    for d in pending:
        print(f"unfinished: {d['repo_id']} {fmt(d['done_bytes'])} of {fmt(d['total_bytes'])} ({d['state']}"
              f"{': ' + d['error'] if d['error'] else ''}); resume with: folio models pull {d['repo_id']}")
    return 0


def _search(args) -> int:
    from app.hub import search
    from app.bench.common import table

    results = search.search(args.query, limit=args.limit)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    elif not results:
        print(f"No MLX models match {args.query!r}.")
    else:
        print(table(["model", "downloads", "likes", "quantization", "updated"],
                    [[r.repo_id, r.downloads, r.likes, r.quantization or "-", r.last_modified] for r in results]))
    return 0


def _fit_remote(args) -> int:
    from app.hub import fit, search
    from app.bench.common import table

    config, weights = search.details(args.repo_id)
    est = fit.estimate(config, weights, context=args.context)
    if args.json:
        print(json.dumps({"repo_id": args.repo_id, "weights_bytes": weights, "fit": est.as_dict()}, indent=2))
        return 0
    print(f"{args.repo_id}: {fmt(weights)} of weights; at {est.context:,} tokens, against "
          f"{fmt(est.budget_bytes)} usable here: {est.summary()}.")
    print(table(["KV cache", "memory needed", "verdict", "longest context that fits"],
                [[m.mode, fmt(m.need_bytes), m.verdict, f"{m.max_context:,}"] for m in est.modes]))
    return 0


def _pull(args) -> int:
    from app.hub import download

    control = download.Control()
    last = {"line": ""}

    def on_progress(p):
        if args.json:
            return
        line = (f"\r{args.repo_id}: {fmt(p.done_bytes)} / {fmt(p.total_bytes)} ({p.fraction:.0%})  "
                f"{fmt(p.speed_bps)}/s  ETA {duration(p.eta_s)}   ")
        if line != last["line"]:
            sys.stderr.write(line)
            sys.stderr.flush()
            last["line"] = line

    old = signal.signal(signal.SIGINT, lambda *_: control.pause())
    try:
        snapshot = download.pull(args.repo_id, on_progress=on_progress, control=control)
    finally:
        signal.signal(signal.SIGINT, old)
        if last["line"]:
            sys.stderr.write("\n")
    if args.json:
        print(json.dumps({"repo_id": args.repo_id, "path": str(snapshot), "installed": True}))
    else:
        print(f"Installed {args.repo_id} at {snapshot}")
    return 0


def _rm(args) -> int:
    from app.hub import installed

    message = installed.remove(args.name)
    print(json.dumps({"removed": args.name, "message": message}) if args.json else message)
    return 0


def _import(args) -> int:
    from app.hub import installed

    m = installed.import_folder(args.folder)
    print(json.dumps(m.as_dict()) if args.json else f"Imported {m.path} ({fmt(m.size_bytes)}).")
    return 0


ACTIONS = {"list": _list, "search": _search, "fit": _fit_remote, "pull": _pull, "rm": _rm, "import": _import}
