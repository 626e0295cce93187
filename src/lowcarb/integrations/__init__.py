"""Ledger windows for other libraries' training loops.

`lowcarb.integrations.transformers.LowcarbCallback`: the Hugging Face Trainer. Each integration
imports its library only when its module is imported, so lowcarb never needs it.
"""
