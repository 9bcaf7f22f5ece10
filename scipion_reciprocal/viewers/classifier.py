"""Viewers of the particle classifier protocols."""
import os

from ..core.picking import TEST_REPORT
from ..protocols import ProtClassifyParticles, ProtPickMicrographs, ProtTrainParticleClassifier
from ..protocols.classifier_base import PLOTS_DIR
from ..protocols.protocol_classifier_classify import GALLERY_PNG, SCORE_HISTOGRAM_PNG
from ..protocols.protocol_classifier_pick import PICKS_PNG, SCORE_MAP_PNG
from ..protocols.protocol_classifier_train import (CONFUSION_PNG, LEARNING_CURVES_PNG, MODEL_DIR,
                                                   ROC_PNG)
from .plot_files import PlotFilesViewer, anyName


class ClassifierTrainingViewer(PlotFilesViewer):
    """Learning curves, ROC curve and confusion matrix on the held-out test set."""
    _label = "classifier training viewer"
    _targets = [ProtTrainParticleClassifier]
    _plotPatterns = tuple(os.path.join(PLOTS_DIR, name)
                          for name in (LEARNING_CURVES_PNG, ROC_PNG, CONFUSION_PNG))
    _resultFolders = ("",)
    _textFiles = (("Test report (JSON)", os.path.join(MODEL_DIR, TEST_REPORT)),)


class ClassifierPickingViewer(PlotFilesViewer):
    """Micrographs with the picks coloured by score, and the score maps."""
    _label = "classifier picking viewer"
    _targets = [ProtPickMicrographs]
    _plotPatterns = tuple(os.path.join(PLOTS_DIR, anyName(name))
                          for name in (PICKS_PNG, SCORE_MAP_PNG))
    _resultFolders = ("",)


class ClassifierScoresViewer(PlotFilesViewer):
    """Score histogram and galleries of the highest and lowest scored particles."""
    _label = "classifier scores viewer"
    _targets = [ProtClassifyParticles]
    _plotPatterns = tuple(os.path.join(PLOTS_DIR, anyName(name))
                          for name in (SCORE_HISTOGRAM_PNG, GALLERY_PNG))
    _resultFolders = ("",)
