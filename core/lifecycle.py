"""Process lifecycle shared by the server and the probes: once draining starts, `/ready` answers 503."""

import threading

_draining = threading.Event()


def begin_draining() -> None:
    _draining.set()


def is_draining() -> bool:
    return _draining.is_set()
