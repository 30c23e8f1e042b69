"""Checkers for the exercises of notebook training (see dino_ref.exercises)."""

__all__ = []
