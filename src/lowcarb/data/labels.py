"""Label maps: raw labels (integers or strings) <-> class indices 0..K-1, saved as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lowcarb import files
from lowcarb.errors import DataError, MissingPathError


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
    return None


@dataclass(frozen=True)
class LabelMap:
    """Class names in index order. `numeric` says the raw labels were integers."""

    names: tuple[str, ...]
    numeric: bool

    @classmethod
    def build(cls, raw_labels: Iterable[object]) -> LabelMap:
        """Integer labels sort numerically (so 0..K-1 stay where they are), strings sort by name."""
        raw = [lab for lab in raw_labels]
        if not raw:
            raise ValueError("cannot build a label map from no labels")
        ints = [_as_int(lab) for lab in raw]
        if all(i is not None for i in ints):
            return cls(names=tuple(str(i) for i in sorted(set(ints))), numeric=True)  # type: ignore[type-var]
        return cls(names=tuple(sorted({str(lab).strip() for lab in raw})), numeric=False)

    @property
    def num_labels(self) -> int:
        return len(self.names)

    def key(self, raw: object) -> str:
        if self.numeric:
            as_int = _as_int(raw)
            return str(as_int) if as_int is not None else str(raw).strip()
        return str(raw).strip()

    def encode(self, raw: object) -> int:
        """Index of a raw label; KeyError if it is not in the map (callers name file and column)."""
        return self._index()[self.key(raw)]

    def __contains__(self, raw: object) -> bool:
        return self.key(raw) in self._index()

    def decode(self, index: int) -> str:
        return self.names[index]

    def encode_all(self, raw_labels: Sequence[object]) -> list[int]:
        table = self._index()
        return [table[self.key(lab)] for lab in raw_labels]

    def _index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def to_dict(self) -> dict[str, object]:
        return {"names": list(self.names), "numeric": self.numeric}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with files.path_errors(path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
        return files.write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        path = Path(path)
        try:
            payload = json.loads(path.read_text())
            return cls(names=tuple(str(n) for n in payload["names"]), numeric=bool(payload["numeric"]))
        except FileNotFoundError:
            raise MissingPathError(f"label map not found: {path}") from None
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise DataError(
                f"{path}: not a lowcarb label map (expected JSON with 'names' and 'numeric'): {exc}"
            ) from exc
