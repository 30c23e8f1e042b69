"""Checkers for the exercises of notebook centering (see dino_ref.exercises)."""

__all__ = []
