"""Shared pytest fixtures. Add new fixtures below; keep existing ones unchanged."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")
