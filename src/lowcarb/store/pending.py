"""What a full store could not save yet: kept in memory, saved at the next write that succeeds.

A run that fills the disk must not lose its finished work: a footprint or stage result whose
write fails with StoreFullError waits here (with a warning saying so) and is written, in order,
before the store's next write; `RunStore.finish_run` says what is still unsaved.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from lowcarb.store.records import StoreFullError, StoreWarning


class PendingWrites:
    def __init__(self, location: str) -> None:
        self.location = location
        self._writes: list[tuple[str, Callable[[], int]]] = []

    def save_or_keep(self, what: str, write: Callable[[], int]) -> int:
        """write()'s result; 0 when the store is full and the write is kept for later."""
        try:
            self.flush()
            return write()
        except StoreFullError as exc:
            self._writes.append((what, write))
            warnings.warn(
                StoreWarning(
                    f"{exc}: the {what} is kept in memory and saved at the next write to the "
                    f"store ({len(self._writes)} unsaved); free space to keep it"
                ),
                stacklevel=4,
            )
            return 0

    def flush(self) -> None:
        """Write what was kept, oldest first; raises StoreFullError while the store is full."""
        while self._writes:
            self._writes[0][1]()
            self._writes.pop(0)

    @property
    def unsaved(self) -> list[str]:
        return [what for what, _ in self._writes]
