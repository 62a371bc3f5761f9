"""``cytoreview demo``: the one CLI command that opens the GUI (napari is imported only when it runs)."""

from __future__ import annotations

#: What the viewer needs; the ``napari`` extra of the package installs them (``pip install "cytoreview[napari]"``).
GUI_MODULES = ("napari", "magicgui", "qtpy.QtWidgets")


def register(subparsers) -> None:
    """Add the ``demo`` subcommand."""
    from cytoreview._napari.demo import CASES

    parser = subparsers.add_parser("demo", help="open napari with cytoreview on a sample case")
    parser.add_argument("--case", choices=sorted(CASES), default="warthin")
    parser.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window and exit")
    parser.set_defaults(func=run)


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


def run(args) -> int:
    """Start the demo viewer."""
    require_gui()
    from cytoreview._napari.demo import run_demo

    run_demo(args.case, screenshot=args.screenshot)
    return 0
