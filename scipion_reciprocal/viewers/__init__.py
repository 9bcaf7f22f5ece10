"""Viewers of scipion-reciprocal (Scipion discovers the classes imported here)."""
from .classifier import (ClassifierPickingViewer, ClassifierScoresViewer,
                         ClassifierTrainingViewer)
from .cryosparc import CryosparcClassificationsViewer
from .mapclust import MapClusteringViewer
from .reciprocal import ReciprocalAnalysisViewer, RelionClassificationsViewer
from .recovar import (RecovarAnalyzeViewer, RecovarDensityViewer, RecovarJunkViewer,
                      RecovarOutliersViewer, RecovarPipelineOutliersViewer, RecovarPipelineViewer,
                      RecovarPostprocessViewer, RecovarStateViewer, RecovarTrajectoryViewer)
