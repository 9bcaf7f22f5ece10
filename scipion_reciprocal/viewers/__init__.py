"""Viewers of scipion-reciprocal (Scipion discovers the classes imported here)."""
from .mapclust import MapClusteringViewer
from .reciprocal import ReciprocalAnalysisViewer, RelionClassificationsViewer
