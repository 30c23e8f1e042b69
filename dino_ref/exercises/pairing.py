"""Checkers for the exercises of notebook pairing (see dino_ref.exercises)."""

__all__ = []
