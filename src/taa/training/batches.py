"""What a task hands every framework's Trainer: an endless, resumable stream of batches."""

from __future__ import annotations

from typing import Any, Protocol


class BatchStream(Protocol):
    """An endless iterator of batches whose position can be saved and restored."""

    def __next__(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
