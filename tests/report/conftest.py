"""A stored run with two models (a trained one, then a cheaper compressed one), as plain dicts."""

import pytest


def footprint(energy_j, op_g, emb_g, duration_s=1.0):
    return {
        "duration_s": duration_s,
        "energy_j": energy_j,
        "operational_g": op_g,
        "embodied_g": emb_g,
        "total_g": op_g + emb_g,
        "components": {"cpu": {"energy_j": energy_j, "method": "estimated: cpu-time x 4 W/core"}},
    }


def metrics(acc, per1k_g, latency_ms, params):
    return {
        "dev_accuracy": acc + 0.01,
        "test_accuracy": acc,
        "test_macro_f1": acc - 0.01,
        "latency_b1_p50_ms": latency_ms,
        "latency_b1_p95_ms": latency_ms * 1.5,
        "latency_b32_p50_ms": latency_ms * 8,
        "params": params,
        "size_bytes": params * 4,
        "flops_per_example": params * 2.0,
        "per1k_energy_j": per1k_g * 1000,
        "per1k_operational_g": per1k_g * 0.25,
        "per1k_embodied_g": per1k_g * 0.75,
        "per1k_total_g": per1k_g,
    }


def record(label, name, version, changes, fp=None, m=None, auto=False, status="completed"):
    return {
        "label": label,
        "name": name,
        "settings": {},
        "changes_model": changes,
        "model_version": version,
        "auto": auto,
        "status": status,
        "footprint": fp,
        "metrics": m,
        "summary": {},
        "error": None,
    }


@pytest.fixture
def two_model_run():
    return {
        "id": "abcd1234",
        "name": "demo",
        "status": "completed",
        "started_at": "2026-11-28T05:00:00+00:00",
        "source": "recipes/demo.yaml",
        "recipe": {"name": "demo", "stages": [{"train": {}}, {"shrink": {}}]},
        "stages": [
            record("setup", "setup", 0, False, footprint(1.0, 0.001, 0.004), auto=True),
            record("train", "train", 1, True, footprint(300.0, 0.04, 0.2)),
            record("train:evaluate", "evaluate", 1, False, footprint(5.0, 0.001, 0.002),
                   metrics(0.95, 0.004, 2.0, 40000), auto=True),
            dict(record("shrink", "shrink", 2, True, footprint(60.0, 0.01, 0.05)),
                 summary={"params_before": 40000, "params_after": 10000, "ratio": 0.25}),
            record("shrink:evaluate", "evaluate", 2, False, footprint(3.0, 0.0005, 0.001),
                   metrics(0.93, 0.001, 0.8, 10000), auto=True),
        ],
        "error": None,
    }
