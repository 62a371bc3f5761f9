"""Long work off the GUI thread: a blocking function with ``progress`` / ``cancel`` hooks as a napari generator worker.

The core's long functions (``cytoreview.inference.predict`` ...) report progress through a callback and stop when a
``threading.Event`` is set. :func:`progress_generator` runs such a function in a helper thread and turns its callback
calls into yielded values, so that ``napari.qt.threading`` delivers them to the GUI thread as ``worker.yielded``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

_DONE = object()


def progress_generator(fn: Callable, *args, **kwargs) -> Iterator[tuple[int, int]]:
    """Run ``fn(*args, progress=callback, **kwargs)`` and yield its ``(done, total)`` reports; return its result.

    Reports that arrive faster than the consumer takes them are merged (only the newest is yielded). An exception
    raised by ``fn`` is raised again here, after the helper thread has ended.

    Parameters
    ----------
    fn : callable
        Blocking function taking a ``progress(done, total)`` keyword argument.
    *args, **kwargs
        Passed on to ``fn``.

    Yields
    ------
    tuple of int
        ``(done, total)``.
    """
    reports: queue.Queue = queue.Queue()
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = fn(*args, progress=lambda done, total: reports.put((int(done), int(total))), **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread, raised there
            outcome["error"] = exc
        finally:
            reports.put(_DONE)

    thread = threading.Thread(target=target, name=f"cytoreview-{getattr(fn, '__name__', 'task')}", daemon=True)
    thread.start()
    finished = False
    while not finished:
        latest = reports.get()
        if latest is _DONE:
            break
        while True:  # merge a backlog into its newest report
            try:
                item = reports.get_nowait()
            except queue.Empty:
                break
            if item is _DONE:
                finished = True
                break
            latest = item
        yield latest
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
