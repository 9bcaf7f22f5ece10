"""Viewers of the reciprocal analysis and of imported RELION classifications."""
import json
import os

from pyworkflow.protocol import params
from pyworkflow.viewer import TextView

from ..core.reciprocal_io import REPRODUCIBILITY_CSV, SUMMARY_TXT, VERDICT_JSON
from ..plotting.reciprocal import (AGREEMENT_PNG, CONVERGENCE_PNG, HEATMAP_PNG, PLOTS_DIR,
                                   SANKEY_HTML, SANKEY_PNG, SLICES_PNG)
from ..plotting.verdict import DENDROGRAM_PNG, ENRICHMENT_PNG, SANKEY_GROUPS_PNG, STABILITY_PNG
from ..protocols import ProtImportRelionClassifications, ProtReciprocalAnalysis
from ..protocols.protocol_import_relion_classes import PLOTS_DIR as IMPORT_PLOTS_DIR
from ..protocols.protocol_reciprocal import RESULTS_DIR
from .plot_files import PlotFilesViewer, anyName


class ReciprocalAnalysisViewer(PlotFilesViewer):
    """The verdict in words and its pictures (enrichment with significance, merge dendrogram
    with its cut, particle stability, Sankey diagram by merged group), then heatmaps (counts,
    fractions, Jaccard), Sankey diagrams, agreement table, convergence plots and class-map
    slices of a reciprocal analysis."""
    _label = "reciprocal analysis viewer"
    _targets = [ProtReciprocalAnalysis]
    _plotPatterns = tuple(os.path.join(RESULTS_DIR, PLOTS_DIR, anyName(name)) for name in (
        SANKEY_GROUPS_PNG, ENRICHMENT_PNG, DENDROGRAM_PNG, STABILITY_PNG, SANKEY_PNG,
        AGREEMENT_PNG, HEATMAP_PNG, CONVERGENCE_PNG, SLICES_PNG))
    _textFiles = (("Summary (text)", os.path.join(RESULTS_DIR, SUMMARY_TXT)),
                  ("Reproducibility of every class (table)",
                   os.path.join(RESULTS_DIR, REPRODUCIBILITY_CSV)))
    _resultFolders = (RESULTS_DIR,)
    _htmlFiles = (("Interactive Sankey diagram (browser)",
                   os.path.join(RESULTS_DIR, PLOTS_DIR, SANKEY_HTML)),)

    def plotFiles(self):
        """Every PNG once, in the order of the patterns (``sankey_groups`` matches two)."""
        return list(dict.fromkeys(super().plotFiles()))

    def verdictSentence(self):
        """The verdict as written to verdict.json ("3 reproducible states; 81% of particles
        stable"), or None before the analysis has run, without a verdict, or when the results
        are incomplete."""
        path = self._extra(RESULTS_DIR, VERDICT_JSON)
        if not os.path.exists(path) or self.incompleteReason():
            return None
        with open(path) as handle:
            return json.load(handle)["verdict"]

    def _defineParams(self, form):
        PlotFilesViewer._defineParams(self, form)
        sentence = self.verdictSentence()
        if sentence:
            form.addParam("verdict", params.LabelParam, label="Verdict: %s" % sentence,
                          help="Reproducible states: significant consensus groups whose "
                               "classes reproduce each other in every run pair; stable "
                               "particles: stability at least the threshold, in a significant "
                               "group. The summary explains every number.")

    def _getVisualizeDict(self):
        visualize = PlotFilesViewer._getVisualizeDict(self)
        visualize["verdict"] = self._ifComplete(
            lambda e=None: [TextView([self._extra(RESULTS_DIR, SUMMARY_TXT)])])
        return visualize


class RelionClassificationsViewer(PlotFilesViewer):
    """Convergence (class changes, class distribution, resolution per iteration) and
    central slices of the class maps of imported RELION classifications."""
    _label = "RELION classifications viewer"
    _targets = [ProtImportRelionClassifications]
    _plotPatterns = tuple(os.path.join(IMPORT_PLOTS_DIR, anyName(name))
                          for name in (CONVERGENCE_PNG, SLICES_PNG))
    _resultFolders = ("",)
