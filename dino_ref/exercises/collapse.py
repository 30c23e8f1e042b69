"""Checkers for the exercises of notebook collapse (see dino_ref.exercises)."""

__all__ = []
