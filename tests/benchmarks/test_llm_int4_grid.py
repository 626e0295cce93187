"""benchmarks/llm_int4_grid.py: the int4 codes it computes are those of a Q4_1 grid, a change under
half a step keeps every code, and the figures count decoder Linears only."""

from __future__ import annotations

import torch

from tests.benchmarks.test_results_files import load

grid = load("llm_int4_grid")


def q4_1_weight(rows: int, cols: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A weight dequantized from Q4_1 blocks of 32: codes 0..15 (each block holding 0 and 15, as
    a Q4_1 block built from its own min and max does), a scale and a minimum per block."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (rows, cols // 32, 32), generator=gen).float()
    codes[..., 0], codes[..., 1] = 0.0, 15.0
    scale = torch.rand(rows, cols // 32, 1, generator=gen) * 0.05 + 0.01
    low = -torch.rand(rows, cols // 32, 1, generator=gen) * 0.5
    return (low + codes * scale).reshape(rows, cols), codes.reshape(rows, cols), scale.expand(-1, -1, 32).reshape(rows, cols)


def test_group_32_codes_recover_the_q4_1_grid():
    weight, codes, scale = q4_1_weight(8, 64)
    found, step = grid.int4_codes(weight, 32)
    assert torch.equal(found, codes)
    torch.testing.assert_close(step, scale)


def test_a_change_under_half_a_step_keeps_every_code_and_one_over_moves_it():
    weight, codes, scale = q4_1_weight(4, 64, seed=1)
    interior = (codes > 0) & (codes < 15)  # the min and max set the grid: leave them in place
    nudged = weight + torch.where(interior, 0.4 * scale, torch.zeros_like(weight))
    assert torch.equal(grid.int4_codes(nudged, 32)[0], codes)
    pushed = weight + torch.where(interior, 0.6 * scale, torch.zeros_like(weight))
    moved = grid.int4_codes(pushed, 32)[0] != codes
    assert torch.equal(moved, interior)


def test_a_larger_group_is_not_the_shipped_grid():
    weight, codes, _ = q4_1_weight(4, 128, seed=2)
    assert not torch.equal(grid.int4_codes(weight, 128)[0], codes)


class Tiny(torch.nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        block = torch.nn.Module()
        block.proj = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        block.proj.weight.data = weight.clone()
        self.layers = torch.nn.ModuleList([block])
        self.lm_head = torch.nn.Linear(weight.shape[1], 3, bias=False)


def test_grid_figures_count_decoder_linears_and_moved_weights():
    weight, codes, scale = q4_1_weight(4, 64, seed=3)
    shipped = Tiny(weight)
    tuned = Tiny(weight)
    interior = (codes > 0) & (codes < 15)
    first = torch.zeros_like(weight, dtype=torch.bool)
    first[0] = interior[0]  # only row 0 moves past half a step
    tuned.layers[0].proj.weight.data += torch.where(first, 0.6 * scale, 0.1 * scale * interior)
    tuned.lm_head.weight.data += 1.0  # the head is not a decoder Linear: never counted
    figures = grid.grid_figures(shipped, tuned)
    assert figures["linears"] == 1 and figures["weights"] == weight.numel()
    expected = 100 * int(first.sum()) / weight.numel()
    assert abs(figures["moved_over_half_step_pct"] - expected) < 1e-9
    assert abs(figures["code_agreement_pct"] - (100 - expected)) < 1e-9
