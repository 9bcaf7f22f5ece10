"""Viewers of the particle classifier protocols."""
from ..protocols import ProtClassifyParticles, ProtPickMicrographs, ProtTrainParticleClassifier
from .plot_files import PlotFilesViewer


class ClassifierTrainingViewer(PlotFilesViewer):
    """Learning curves, ROC curve and confusion matrix on the held-out test set."""
    _label = "classifier training viewer"
    _targets = [ProtTrainParticleClassifier]
    _plotPatterns = ("plots/learning_curves.png", "plots/roc.png", "plots/confusion.png")
    _resultFolders = ("",)
    _textFiles = (("Test report (JSON)", "model/test_report.json"),)


class ClassifierPickingViewer(PlotFilesViewer):
    """Micrographs with the picks coloured by score, and the score maps."""
    _label = "classifier picking viewer"
    _targets = [ProtPickMicrographs]
    _plotPatterns = ("plots/picks_*.png", "plots/score_map_*.png")
    _resultFolders = ("",)


class ClassifierScoresViewer(PlotFilesViewer):
    """Score histogram and galleries of the highest and lowest scored particles."""
    _label = "classifier scores viewer"
    _targets = [ProtClassifyParticles]
    _plotPatterns = ("plots/score_histogram.png", "plots/gallery_*.png")
    _resultFolders = ("",)
