"""The coordinate check passes under muP and fails under SP, on tiny widths."""

from __future__ import annotations

import math

import pytest

from lowcarb.search.mup import MupModelConfig
from lowcarb.search.mup.coord_check import CoordCheckConfig, coord_check, log_log_slope, plot


def test_log_log_slope():
    assert log_log_slope([8, 16, 32], [8**0.5, 16**0.5, 32**0.5]) == pytest.approx(0.5)
    assert log_log_slope([8, 16, 32], [3.0, 3.0, 3.0]) == pytest.approx(0.0)
    assert log_log_slope([8, 16, 32], [0.0, 0.0, 0.0]) == 0.0  # zero-initialised readout
    assert math.isinf(log_log_slope([8, 16, 32], [0.0, 1.0, 2.0]))
    assert math.isinf(log_log_slope([8, 16, 32], [1.0, float("nan"), 2.0]))


def test_mlp_passes_under_mup_and_fails_under_sp(tmp_path):
    check = CoordCheckConfig(widths=(16, 32, 64), steps=4, seeds=(0, 1))
    result = coord_check(MupModelConfig(kind="mlp", width=16, base_width=16), check)
    assert result.passed, result.worst("mup")
    assert not result.passes("sp")
    layer, _, slope = result.worst("sp")
    assert slope > check.tolerance  # SP blows up (grows with width), it does not vanish
    kinds = {r.kind for r in result.records}
    assert kinds == {"hidden", "readout"}
    # Every layer at every step at every width, for both parametrizations.
    assert len(result.records) == 2 * 3 * 4 * 3
    png = plot(result, tmp_path / "cc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    d = result.to_dict()
    assert d["passed"] is True and d["sp_passed"] is False


def test_transformer_lm_passes_under_mup_and_fails_under_sp():
    check = CoordCheckConfig(widths=(32, 64, 128, 256), steps=4, seeds=(0, 1))
    result = coord_check(MupModelConfig(kind="lm", width=32, base_width=32), check)
    assert result.passed, result.worst("mup")
    assert not result.passes("sp")
    assert {"embedding", "attn_logits", "attn_out", "mlp_out", "residual", "readout"} <= {
        r.kind for r in result.records
    }


def test_bad_check_settings():
    with pytest.raises(ValueError, match="at least two widths"):
        CoordCheckConfig(widths=(32,))
    with pytest.raises(ValueError, match="increasing"):
        CoordCheckConfig(widths=(64, 32))
    with pytest.raises(ValueError, match="below the base width"):
        coord_check(
            MupModelConfig(kind="mlp", width=32, base_width=32), CoordCheckConfig(widths=(16, 32))
        )
