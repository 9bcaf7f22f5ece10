"""Viewers of scipion-reciprocal (Scipion discovers the classes imported here)."""
from .reciprocal import ReciprocalAnalysisViewer, RelionClassificationsViewer
