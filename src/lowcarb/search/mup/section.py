"""The `mutransfer:` section of a recipe, validated at the file edge into a MutransferConfig.

    name: mutransfer-shakespeare
    carbon: {region: FR}                # measured like every other run
    mutransfer:
      text: lines.txt                   # a .txt, or a .tsv/.csv with `column`; relative paths are
      val_text: val.txt                 #   read from the recipe's folder; no val_text: a fixed tenth
      limit: 20000                      # optional: a fixed-seed subset of the training lines
      model: {base_width: 32, depth: 2, n_heads: 4, max_len: 64}
      proxy_width: 64
      target_width: 512
      log2_lrs: [-10, -9, -8, -7, -6]
      output_mults: [1.0]               # optional grids; init_stds too
      train: {steps: 200, batch_size: 16, seq_len: 64}
      seeds: [0]
      verify_octaves: [-1, 1]
      direct_sweep: false               # true: also sweep the target width (measured, not extrapolated)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lowcarb.search.mup.mutransfer import MutransferConfig

# The data keys; everything else is the sweep (MutransferConfig).
DATA_KEYS = ("text", "val_text", "column", "limit")


class MutransferSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1)
    val_text: str | None = None
    column: str = "text"
    limit: int | None = Field(default=None, ge=1)
    model: dict[str, Any]
    proxy_width: int = Field(ge=1)
    target_width: int = Field(ge=1)
    log2_lrs: list[float] = Field(min_length=1)
    output_mults: list[float] = Field(default=[1.0], min_length=1)
    init_stds: list[float] = Field(default=[1.0], min_length=1)
    train: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] = Field(default=[0], min_length=1)
    verify_octaves: list[float] = Field(default=[-1.0, 1.0])
    direct_sweep: bool = False

    @model_validator(mode="after")
    def _check(self) -> MutransferSection:
        self.to_config()  # the sweep's own checks (widths, model, train keys) run here, at the edge
        return self

    def to_config(self) -> MutransferConfig:
        sweep = self.model_dump(exclude=set(DATA_KEYS), exclude_unset=True)
        return MutransferConfig.from_dict(sweep)

    def data_paths(self, folder: str | Path) -> tuple[Path, Path | None]:
        """The training and validation text files, relative paths read from `folder` (the
        recipe's folder)."""
        base = Path(folder)
        val = None if self.val_text is None else base / self.val_text
        return base / self.text, val
