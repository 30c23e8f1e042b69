"""Checkers for the exercises of notebook loss (see dino_ref.exercises)."""

__all__ = []
