"""SIGINT/SIGTERM during training: finish the current step, write a checkpoint, stop."""

from __future__ import annotations


class StopSignals:
    """SIGINT/SIGTERM during training: finish the current step, write a checkpoint, stop."""

    def __init__(self):
        import signal
        import threading

        self.received: str | None = None
        self._old = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        import signal

        if self.received is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def restore(self) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
