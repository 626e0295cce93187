"""lowcarb: make AI models cheaper to build and to run, and prove it in joules and grams of CO2e."""

__version__ = "0.1.0"
