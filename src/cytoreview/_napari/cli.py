"""``cytoreview demo``: the one CLI command that opens the GUI (napari is imported only when it runs)."""

from __future__ import annotations

#: What the viewer needs; the ``napari`` extra of the package installs them (``pip install "cytoreview[napari]"``).
GUI_MODULES = ("napari", "magicgui", "qtpy.QtWidgets")


def register(subparsers) -> None:
    """Add the ``demo`` and ``open`` subcommands."""
    from cytoreview._napari.demo import CASES

    parser = subparsers.add_parser("demo", help="open napari with cytoreview on a sample case")
    parser.add_argument("--case", choices=sorted(CASES), default="warthin")
    parser.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window and exit")
    parser.set_defaults(func=run)
    opener = subparsers.add_parser("open", help="open slides or CytoScan field sets in napari with cytoreview "
                                                "(no reader dialog)")
    opener.add_argument("paths", nargs="+", metavar="PATH")
    opener.set_defaults(func=run_open)


def require_gui() -> None:
    """Import napari, magicgui and a Qt binding, or raise one clear error naming the extra to install.

    Raises
    ------
    cytoreview.errors.MissingExtraError
        When one of them is not installed (a headless install: ``pip install cytoreview`` without the extra).
    """
    from importlib import import_module

    from cytoreview.errors import MissingExtraError

    for name in GUI_MODULES:
        try:
            import_module(name)
        except ImportError as exc:
            raise MissingExtraError(
                f"the viewer needs napari and Qt, and {name.split('.')[0]} cannot be imported ({exc}); "
                'install them with: pip install "cytoreview[napari]"'
            ) from None


def require_display(environ=None, platform: str | None = None) -> None:
    """Raise one clear error when Qt has no screen to draw on (Linux without ``DISPLAY`` / ``WAYLAND_DISPLAY``),
    instead of letting Qt abort the process (exit 134, "could not connect to display").

    Raises
    ------
    cytoreview.errors.CytoreviewError
        With the hint to run under ``xvfb-run`` or on a desktop.
    """
    import os
    import sys

    from cytoreview.errors import CytoreviewError

    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux") or environ.get("QT_QPA_PLATFORM", "").split(":")[0] not in ("", "xcb",
                                                                                                       "wayland"):
        return
    if not environ.get("DISPLAY") and not environ.get("WAYLAND_DISPLAY"):
        raise CytoreviewError(
            "no display to open napari on (DISPLAY and WAYLAND_DISPLAY are not set): run it on a desktop, over "
            'ssh -X, or under a virtual one: xvfb-run -a -s "-screen 0 1600x1000x24" cytoreview demo'
        )


def run(args) -> int:
    """Start the demo viewer."""
    require_gui()
    require_display()
    from cytoreview._napari.demo import run_demo

    run_demo(args.case, screenshot=args.screenshot)
    return 0


def run_open(args) -> int:
    """Open each path in one napari window through cytoreview's reader (remembered for that path), then run napari.

    A path cytoreview cannot open is one error naming it (exit 2) before any window opens.
    """
    from pathlib import Path

    from cytoreview.errors import CytoreviewError
    from cytoreview.io import can_open

    for path in args.paths:
        if not Path(path).exists():
            raise CytoreviewError(f"{path}: no such file or folder")
        if not can_open(path):
            raise CytoreviewError(f"{path}: not a slide or CytoScan field set cytoreview can open")
    require_gui()
    require_display()
    import napari

    viewer = napari.Viewer(title="cytoreview")
    for path in args.paths:
        viewer.open(str(path), plugin="cytoreview")
    napari.run()
    return 0
