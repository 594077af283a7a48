"""Per-framework benchmark scripts, run through ``python -m nbutils.bench``."""
