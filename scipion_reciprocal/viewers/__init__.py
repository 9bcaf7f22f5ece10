"""Viewers of scipion-reciprocal (Scipion discovers the classes imported here)."""
