"""Builds, checks, signs, notarizes and packs Folio.app: `python packaging/release.py STEP`.

Steps: check (what the build needs), build (py2app, then verify and the bundle's own
--self-test), verify (a built bundle's layout), sign (hardened runtime), notarize (and staple),
dmg, all. Each step fails with one line naming what is missing: an environment variable, a
tool, a file. `--dry-run` prints the commands instead of running them, on any OS.

Environment:
  FOLIO_SIGN_IDENTITY   "Developer ID Application: Name (TEAMID)", for sign and dmg
  FOLIO_NOTARY_PROFILE  a keychain profile made by `xcrun notarytool store-credentials`, or all three of
  FOLIO_APPLE_ID, FOLIO_TEAM_ID, FOLIO_APP_PASSWORD (an app-specific password)
"""

import argparse
import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bundle  # noqa: E402  (a sibling file; packaging/ is not a package, to keep PyPI's `packaging` importable)
from bundle import PackagingError  # noqa: E402

DIST = bundle.ROOT / "dist"
BUILD = bundle.ROOT / "build" / "py2app"
MACHO_MAGICS = {
    b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe", b"\xbe\xba\xfe\xca",
}


def app_path() -> Path:
    return DIST / f"{bundle.APP_NAME}.app"


def dmg_path() -> Path:
    return DIST / f"{bundle.APP_NAME}-{bundle.version()}.dmg"


class Runner:
    def __init__(self, dry_run: bool = False, out=None):
        self.dry_run = dry_run
        self.out = out or sys.stdout

    def __call__(self, *cmd, cwd=None):
        cmd = [str(c) for c in cmd]
        print("+ " + shlex.join(cmd), file=self.out, flush=True)
        if self.dry_run:
            return
        result = subprocess.run(cmd, cwd=cwd)
        if result.returncode != 0:
            raise PackagingError(f"{Path(cmd[0]).name} failed with exit status {result.returncode}: {shlex.join(cmd)}")

    def require_tool(self, name: str, why: str):
        if not self.dry_run and shutil.which(name) is None:
            raise PackagingError(f"{why} needs `{name}`, which is not on PATH (install Xcode's command line tools: xcode-select --install)")

    def require_mac(self, step: str):
        if not self.dry_run and sys.platform != "darwin":
            raise PackagingError(f"{step} runs only on macOS (this is {sys.platform}); use --dry-run to see its commands")


def require_env(name: str, why: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise PackagingError(f"{why}: set {name}")
    return value


def require_bundle(app: Path) -> Path:
    if not (app / "Contents" / "Info.plist").is_file():
        raise PackagingError(f"no app bundle at {app}: run `python packaging/release.py build` first")
    return app


# -- check and build ------------------------------------------------------------
def step_check(run: Runner, platform: str = sys.platform):
    problems = bundle.check_sources(platform)
    if problems:
        raise PackagingError("the build is missing: " + "; ".join(problems))
    print(f"check: everything {bundle.APP_NAME} {bundle.version()} needs is present", file=run.out)


def step_build(run: Runner):
    run.require_mac("build")
    if not run.dry_run:
        try:
            import py2app  # noqa: F401
        except ImportError:
            raise PackagingError("build needs py2app: pip install -e '.[mac]'") from None
        step_check(run)
    BUILD.mkdir(parents=True, exist_ok=True)
    # Run from an empty folder so setuptools does not merge the repository's pyproject.toml into py2app's setup().
    run(sys.executable, bundle.PACKAGING / "setup.py", "py2app", "--dist-dir", DIST, "--bdist-base", BUILD / "bdist", cwd=BUILD)
    if run.dry_run:
        return
    step_verify(run, app_path())
    run(app_path() / "Contents" / "MacOS" / bundle.APP_NAME, "--self-test")


def bundle_problems(app: Path) -> list[str]:
    """What is wrong with a built bundle's layout, as one-line problems (empty when sound)."""
    problems = []
    contents = app / "Contents"
    try:
        plist = plistlib.loads((contents / "Info.plist").read_bytes())
    except (OSError, plistlib.InvalidFileException, ValueError) as e:
        return [f"Contents/Info.plist is missing or invalid ({e})"]
    missing = [k for k in bundle.REQUIRED_PLIST_KEYS if k not in plist]
    if missing:
        problems.append(f"Info.plist lacks {', '.join(missing)}")
    if plist.get("CFBundleShortVersionString") != bundle.version():
        problems.append(f"Info.plist says version {plist.get('CFBundleShortVersionString')}, pyproject.toml {bundle.version()}")
    executable = contents / "MacOS" / plist.get("CFBundleExecutable", bundle.APP_NAME)
    if not executable.is_file():
        problems.append(f"no executable at {executable.relative_to(app)}")
    icon = contents / "Resources" / plist.get("CFBundleIconFile", bundle.ICNS.name)
    if not icon.is_file():
        problems.append(f"no icon at {icon.relative_to(app)}")

    files = [p for p in contents.rglob("*") if p.is_file() or p.is_symlink()]
    libmlx = [p for p in files if p.name == "libmlx.dylib"]
    if not libmlx:
        problems.append("no libmlx.dylib in the bundle: MLX cannot load")
    for lib in libmlx:
        if not (lib.parent / "mlx.metallib").is_file():
            problems.append(f"{lib.relative_to(app)} has no mlx.metallib beside it: MLX will fail with 'Failed to load the default metallib'")
    for plugin in ("platforms/libqcocoa.dylib", "styles/libqmacstyle.dylib"):
        if not any(p.as_posix().endswith("/" + plugin) for p in files):
            problems.append(f"Qt plugin {plugin} is not in the bundle")
    if not any("/imageformats/" in p.as_posix() for p in files):
        problems.append("no Qt image format plugins in the bundle")

    packaged_app = [p for p in contents.glob("Resources/lib/python*/app") if p.is_dir()]
    if not packaged_app:
        problems.append("the app package is not in Contents/Resources/lib/python*/")
    else:
        shaders = packaged_app[0] / "engine" / "shaders"
        for src in sorted(bundle.SHADERS.iterdir()) if bundle.SHADERS.is_dir() else []:
            if src.is_file() and not (shaders / src.name).is_file():
                problems.append(f"shader source {src.name} is not in {shaders.relative_to(app)}")
        if not (packaged_app[0].parent / "resources" / "catalog.json").is_file():
            problems.append("resources/catalog.json is not beside the app package")

    unwanted = sorted({
        p.relative_to(app).as_posix() for p in files
        if {"tkinter", "Tk.framework", "Tcl.framework", "tests", "pytest", "_pytest"} & set(p.relative_to(contents).parts)
        or p.name.startswith("_tkinter")
    })
    if unwanted:
        problems.append(f"{len(unwanted)} files that should be left out, e.g. {unwanted[0]}")
    return problems


def step_verify(run: Runner, app: Path):
    problems = bundle_problems(require_bundle(app))
    if problems:
        raise PackagingError(f"{app.name} is not sound: " + "; ".join(problems))
    print(f"verify: {app} is complete", file=run.out)


# -- sign --------------------------------------------------------------------
def is_macho(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) in MACHO_MAGICS
    except OSError:
        return False


def signing_order(app: Path) -> list[Path]:
    """Inside out, as codesign requires: loose Mach-O files and frameworks, deepest first, then the app."""
    contents = app / "Contents"
    main = contents / "MacOS" / bundle.APP_NAME
    frameworks = sorted({p for p in contents.rglob("*.framework") if p.is_dir()})
    in_framework = lambda p: any(f in p.parents for f in frameworks)  # noqa: E731
    loose = [p for p in contents.rglob("*") if p.is_file() and not p.is_symlink()
             and p != main and not in_framework(p) and is_macho(p)]
    nested = sorted(loose + frameworks, key=lambda p: (-len(p.parts), p.as_posix()))
    return nested + [app]


def step_sign(run: Runner, app: Path):
    identity = require_env("FOLIO_SIGN_IDENTITY", "signing needs a 'Developer ID Application' identity (security find-identity -v -p codesigning)")
    run.require_mac("sign")
    run.require_tool("codesign", "signing")
    app = require_bundle(app)
    base = ["codesign", "--force", "--timestamp", "--options", "runtime", "--sign", identity]
    for path in signing_order(app):
        # Entitlements belong to executables: the app's launcher and py2app's helper interpreter.
        executable = path == app or path.parent == app / "Contents" / "MacOS"
        extra = ["--entitlements", bundle.ENTITLEMENTS] if executable else []
        run(*base, *extra, path)
    run("codesign", "--verify", "--deep", "--strict", "--verbose=2", app)


# -- notarize ------------------------------------------------------------------
def notary_credentials() -> list[str]:
    profile = os.environ.get("FOLIO_NOTARY_PROFILE", "").strip()
    if profile:
        return ["--keychain-profile", profile]
    names = ("FOLIO_APPLE_ID", "FOLIO_TEAM_ID", "FOLIO_APP_PASSWORD")
    missing = [n for n in names if not os.environ.get(n, "").strip()]
    if missing:
        raise PackagingError(
            "notarizing needs Apple credentials: set FOLIO_NOTARY_PROFILE (from `xcrun notarytool "
            f"store-credentials`), or all of {', '.join(names)} (missing: {', '.join(missing)})"
        )
    return ["--apple-id", os.environ["FOLIO_APPLE_ID"], "--team-id", os.environ["FOLIO_TEAM_ID"],
            "--password", os.environ["FOLIO_APP_PASSWORD"]]


def step_notarize(run: Runner, target: Path):
    creds = notary_credentials()
    run.require_mac("notarize")
    run.require_tool("xcrun", "notarizing")
    if not run.dry_run and not target.exists():
        raise PackagingError(f"nothing to notarize at {target}: build (and sign) it first")
    submit = target
    if target.suffix == ".app":
        # notarytool takes a zip, dmg or pkg; ditto keeps the bundle's symlinks and signatures.
        submit = DIST / f"{target.stem}-notarize.zip"
        run("ditto", "-c", "-k", "--keepParent", target, submit)
    run("xcrun", "notarytool", "submit", submit, *creds, "--wait")
    run("xcrun", "stapler", "staple", target)
    if target.suffix == ".app":
        run("spctl", "--assess", "--type", "execute", "--verbose=2", target)
        if not run.dry_run:
            submit.unlink(missing_ok=True)


# -- dmg ---------------------------------------------------------------------
def step_dmg(run: Runner, app: Path):
    run.require_mac("dmg")
    run.require_tool("hdiutil", "making the disk image")
    app = require_bundle(app) if not run.dry_run else app
    identity = os.environ.get("FOLIO_SIGN_IDENTITY", "").strip()
    staging = DIST / "dmg"
    out = dmg_path()
    if not run.dry_run:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        out.unlink(missing_ok=True)
    run("ditto", app, staging / app.name)
    run("ln", "-s", "/Applications", staging / "Applications")
    run("hdiutil", "create", "-volname", bundle.APP_NAME, "-srcfolder", staging, "-fs", "HFS+",
        "-format", "UDZO", "-ov", out)
    if identity:
        run("codesign", "--force", "--timestamp", "--sign", identity, out)
    else:
        print("dmg: FOLIO_SIGN_IDENTITY is not set, so the disk image is unsigned and cannot be notarized", file=run.out)
    if not run.dry_run:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"dmg: {out}", file=run.out)


def step_all(run: Runner, app: Path):
    # Fail before a long build when the later steps could not run anyway.
    require_env("FOLIO_SIGN_IDENTITY", "a release is signed: signing needs a 'Developer ID Application' identity")
    notary_credentials()
    step_build(run)
    step_sign(run, app)
    step_notarize(run, app)
    step_dmg(run, app)
    step_notarize(run, dmg_path())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="release.py", description="Build, sign, notarize and pack Folio.app.")
    parser.add_argument("step", choices=["check", "build", "verify", "sign", "notarize", "dmg", "all"])
    parser.add_argument("target", nargs="?", type=Path, help="the .app (or .dmg for notarize); default dist/Folio.app")
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    args = parser.parse_args(argv)
    run = Runner(args.dry_run)
    target = args.target or app_path()
    try:
        if args.step == "check":
            step_check(run, "darwin")
        elif args.step == "build":
            step_build(run)
        elif args.step == "verify":
            step_verify(run, target)
        elif args.step == "sign":
            step_sign(run, target)
        elif args.step == "notarize":
            step_notarize(run, target)
        elif args.step == "dmg":
            step_dmg(run, target)
        else:
            step_all(run, target)
    except PackagingError as e:
        print(f"release {args.step}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
