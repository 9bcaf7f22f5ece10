"""Map similarity clustering: which maps are the same state, after alignment."""
import os

import pwem.objects as emobj
from pwem.protocols import EMProtocol
from pyworkflow.protocol import params

from ..core.mapsim.clustering import MIN_MAPS_AUTO
from ..core.mapsim.engine import check_inputs, run_map_clustering
from ..core.mapsim.errors import MapClusteringError
from ..core.mapsim.results import (AVERAGES_DIR, CLUSTERS_CSV, SUMMARY_TXT,
                                   aligned_relpath, average_filename, read_results)
from ..core.mapsim.inputs import collect_inputs
from ..formats.errors import FormatError
from ..formats.result_folder import ResultFolder, folder_status
from ..plotting.mapclust import save_plots

RESULTS_DIR = "results"
ALIGN_MODES = ["reference", "pairwise"]
SIMILARITIES = ["correlation", "fsc"]
FSC_MODES = ["resolution", "mean"]
LINKAGES = ["average", "complete", "ward"]
K_METHODS = ["silhouette", "elbow"]


class ProtMapClustering(EMProtocol):
    """Groups maps by similarity: maps of different box or pixel size are resampled to a
    common grid, optionally low-pass filtered and rigidly aligned (rotation + translation,
    coarse to fine), compared by masked correlation or FSC, and clustered hierarchically.
    Outputs the aligned maps, one aligned average per cluster and the grouping as classes
    of volumes."""
    _label = "map similarity clustering"
    # A dict, not an Enum: Enum members with equal values (two SetOfVolumes) become aliases.
    _possibleOutputs = {"outputAlignedVolumes": emobj.SetOfVolumes,
                        "outputAverages": emobj.SetOfVolumes,
                        "outputClasses": emobj.SetOfClassesVol}

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputMaps", params.MultiPointerParam,
                      pointerClass="SetOfVolumes,Volume,SetOfClasses3D", label="Maps",
                      help="Sets of volumes, single volumes and/or 3D classes (their "
                           "representative maps). At least two maps in all.")
        form.addParam("inputMask", params.PointerParam, pointerClass="VolumeMask,Volume",
                      allowsNull=True, label="Mask (optional)",
                      help="Mask on the common grid (the reference map's box and pixel size): "
                           "correlation and normalisation use only the voxels inside it.")
        form.addParam("namesCsv", params.FileParam, allowsNull=True, label="Names CSV (optional)",
                      help="CSV with header original_filename,custom_name giving a name to "
                           "every map file; otherwise the objects' labels are used.")
        form.addParam("reference", params.IntParam, default=1, label="Reference map",
                      help="Position (1-based, in input order) of the map that defines the "
                           "common grid and that the others are aligned to.")
        form.addParam("lowpass", params.FloatParam, default=0.0, label="Low-pass (Å)",
                      help="Compare maps up to this resolution (0: no filter). Comparing at a "
                           "common, moderate resolution stops noise deciding the clusters.")
        group = form.addGroup("Alignment")
        group.addParam("align", params.BooleanParam, default=True, label="Align maps?",
                       help="Rigid alignment (rotation + translation) before comparing. Turn "
                            "off only for maps that are already in one frame (e.g. classes "
                            "of one 3D classification).")
        group.addParam("alignMode", params.EnumParam, choices=ALIGN_MODES, default=0,
                       condition="align", label="Alignment",
                       help="reference: every map onto the reference (N alignments). "
                            "pairwise: every pair (N(N-1)/2 alignments, slower, does not "
                            "depend on the reference).")
        group.addParam("mirror", params.BooleanParam, default=False, condition="align",
                       label="Test handedness?",
                       help="Also try the mirror image of every map (for maps whose hand is "
                            "not known, e.g. from ab-initio runs).")
        group = form.addGroup("Similarity and clustering")
        group.addParam("similarity", params.EnumParam, choices=SIMILARITIES, default=0,
                       label="Similarity",
                       help="correlation: masked Pearson correlation. fsc: from the Fourier "
                            "shell correlation of each pair (see the FSC options).")
        group.addParam("fscMode", params.EnumParam, choices=FSC_MODES, default=0,
                       condition="similarity == 1", label="FSC measure",
                       help="resolution: where the FSC crosses the threshold (relative to "
                            "Nyquist). mean: mean FSC up to the resolution limit.")
        group.addParam("fscThreshold", params.FloatParam, default=0.143,
                       condition="similarity == 1 and fscMode == 0", label="FSC threshold",
                       help="0.143 (half-map convention) or 0.5 (map against map).")
        group.addParam("fscMaxResolution", params.FloatParam, default=0.0,
                       condition="similarity == 1 and fscMode == 1",
                       label="Mean FSC up to (Å)", help="0: up to Nyquist.")
        group.addParam("linkage", params.EnumParam, choices=LINKAGES, default=0,
                       label="Linkage", help="Hierarchical clustering linkage. ward assumes "
                                             "Euclidean distances; average is the safe choice.")
        group.addParam("nClusters", params.IntParam, default=0, label="Number of clusters",
                       help="0 chooses it automatically with the method below.")
        group.addParam("kMethod", params.EnumParam, choices=K_METHODS, default=0,
                       condition="nClusters == 0", label="Choose k by",
                       help="silhouette: the k with the best mean silhouette. elbow: the "
                            "largest jump of the merge heights.")
        group.addParam("maxClusters", params.IntParam, default=10, condition="nClusters == 0",
                       label="Largest k tried",
                       help="Automatic choice tries k = 2 .. this (at most the number of maps - 1).")

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.clusterStep, needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def clusterStep(self):
        """Cluster the maps; the results folder starts empty (a rerun leaves nothing of an
        earlier try) and gets its manifest when every file is written."""
        paths, names = self._mapsAndNames()
        try:
            with ResultFolder(self._getExtraPath(RESULTS_DIR), clean=True,
                              producer="scipion-reciprocal %s" % self._label) as out:
                run_map_clustering(
                    paths, names=None if self.namesCsv.get() else names,
                    names_csv=self.namesCsv.get() or None, mask=self._maskPath(), outdir=out,
                    plot=save_plots, progress=self.info, warn=self.warning, **self._options())
        except (MapClusteringError, FormatError) as error:
            raise RuntimeError(str(error)) from error

    def createOutputStep(self):
        status = folder_status(self._resultPath())
        if not status:
            raise RuntimeError("Nothing registered: %s" % status.reason)
        tables = read_results(self._getExtraPath(RESULTS_DIR))
        clusters = tables["clusters"]
        voxel = float(tables["grid"]["grid_voxel_size"].iloc[0])
        aligned = self._createSetOfVolumes(suffix="_aligned")
        aligned.setSamplingRate(voxel)
        for row in clusters.itertuples():
            volume = emobj.Volume(location=self._resultPath(aligned_relpath(row.name)))
            volume.setSamplingRate(voxel)
            volume.setObjLabel(str(row.name))
            volume.setClassId(int(row.cluster))
            aligned.append(volume)
        averages = self._createSetOfVolumes(suffix="_averages")
        averages.setSamplingRate(voxel)
        for label in sorted(clusters["cluster"].unique()):
            volume = emobj.Volume(location=self._resultPath(AVERAGES_DIR, average_filename(label)))
            volume.setSamplingRate(voxel)
            volume.setObjId(int(label))
            volume.setObjLabel("cluster %d" % label)
            averages.append(volume)
        classes = self._createSetOfClassesVol()
        classes.setImages(aligned)
        classes.classifyItems(updateClassCallback=lambda cls: cls.setRepresentative(
            averages[cls.getObjId()].clone()))
        self._defineOutputs(outputAlignedVolumes=aligned, outputAverages=averages,
                            outputClasses=classes)
        for output in (aligned, averages, classes):
            self._defineSourceRelation(self.inputMaps, output)

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        paths, names = self._mapsAndNames()
        if len(paths) < 2:
            return ["Map clustering needs at least two maps (got %d)." % len(paths)]
        if self.nClusters.get() == 0 and len(paths) < MIN_MAPS_AUTO:
            return ["Choosing the number of clusters automatically needs at least %d maps (got "
                    "%d): set 'Number of clusters'." % (MIN_MAPS_AUTO, len(paths))]
        if self.nClusters.get() > len(paths):
            return ["'Number of clusters' (%d) is more than the maps given (%d)."
                    % (self.nClusters.get(), len(paths))]
        if self.nClusters.get() == 0 and self.maxClusters.get() < 2:
            return ["'Largest k tried' must be at least 2 (got %d)." % self.maxClusters.get()]
        return check_inputs(paths, names=None if self.namesCsv.get() else names,
                            names_csv=self.namesCsv.get() or None, mask=self._maskPath(),
                            reference=self.reference.get() - 1)

    def _warnings(self):
        if not self.namesCsv.get():
            return []
        warnings = []
        try:
            collect_inputs(self._mapsAndNames()[0], names_csv=self.namesCsv.get(),
                           warn=warnings.append)
        except MapClusteringError:
            pass                    # _validate says it
        return warnings

    def _summary(self):
        summary = self._resultPath(SUMMARY_TXT)
        if not os.path.exists(summary):
            return ["%d map inputs." % len(self.inputMaps)]
        status = folder_status(self._resultPath())
        if not status:
            return ["Results incomplete: %s" % status.reason]
        with open(summary) as handle:
            return [line.rstrip() for line in handle if line.strip()][:25]

    def _methods(self):
        if not os.path.exists(self._resultPath(CLUSTERS_CSV)):
            return []
        return ["Maps were compared by %s%s and clustered hierarchically (%s linkage)."
                % (SIMILARITIES[self.similarity.get()],
                   " after rigid alignment" if self.align.get() else "",
                   LINKAGES[self.linkage.get()])]

    def _citations(self):
        return ["Rosenthal2003fsc"] if self.similarity.get() == 1 else []

    # --------------------------- UTILS functions ----------------------------
    def _options(self):
        return dict(reference=self.reference.get() - 1,
                    lowpass=self.lowpass.get() or None, align=self.align.get(),
                    align_mode=ALIGN_MODES[self.alignMode.get()], mirror=self.mirror.get(),
                    similarity=SIMILARITIES[self.similarity.get()],
                    fsc_mode=FSC_MODES[self.fscMode.get()], fsc_threshold=self.fscThreshold.get(),
                    fsc_max_resolution=self.fscMaxResolution.get() or None,
                    linkage=LINKAGES[self.linkage.get()],
                    n_clusters=self.nClusters.get() or "auto",
                    k_method=K_METHODS[self.kMethod.get()], max_clusters=self.maxClusters.get(),
                    workdir=self._getTmpPath())

    def _resultPath(self, *paths):
        return self._getExtraPath(RESULTS_DIR, *paths)

    def _mapsAndNames(self):
        """Map files and names in input order. Names are unique: the volume's label (or file
        stem); a class map is named <classification label>_class<k>."""
        paths, labels = [], []
        for pointer in self.inputMaps:
            obj = pointer.get()
            if obj is None:
                continue
            if isinstance(obj, emobj.SetOfClasses3D):
                prefix = obj.getObjLabel() or "run%s" % pointer.getObjValue().getObjId()
                for cls in obj:
                    if cls.hasRepresentative():
                        paths.append(cls.getRepresentative().getFileName())
                        labels.append("%s_class%d" % (prefix, cls.getObjId()))
                continue
            for volume in (obj if isinstance(obj, emobj.SetOfVolumes) else [obj]):
                paths.append(volume.getFileName())
                labels.append(volume.getObjLabel()
                              or os.path.splitext(os.path.basename(paths[-1]))[0])
        names = []
        for label in labels:
            name, n = label, 2
            while name in names:
                name, n = "%s_%d" % (label, n), n + 1
            names.append(name)
        return [os.path.abspath(p) for p in paths], names

    def _maskPath(self):
        mask = self.inputMask.get()
        return os.path.abspath(mask.getFileName()) if mask is not None else None
