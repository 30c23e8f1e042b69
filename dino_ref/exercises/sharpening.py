"""Checkers for the exercises of notebook sharpening (see dino_ref.exercises)."""

__all__ = []
