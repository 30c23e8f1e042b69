"""Checkers for the exercises of notebook engineering (see dino_ref.exercises)."""

__all__ = []
