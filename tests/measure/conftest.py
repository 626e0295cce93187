"""Fixtures shared by the ledger tests: the scripted `pynvml` (see fakegpu.py)."""

from .fakegpu import fake_nvml

__all__ = ["fake_nvml"]
