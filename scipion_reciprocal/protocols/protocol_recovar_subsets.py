"""Particle subsets from RECOVAR: k-means clusters (kept or inverted) or a volume feature."""
import os
import shutil

import numpy as np
import pwem.objects as emobj
from pyworkflow.protocol import params

from ..convert.classes import class_ids, class_items
from ..convert.particles import export_particles_star
from ..formats import recovar_files as rf
from ..formats import recovar_results as rr
from .inputs import describePointer
from .protocol_recovar_state import parseIndices
from .recovar_base import ProtRecovarBase

FILES = rf.Subsets
FROM_KMEANS, FROM_VOLUME = range(2)
FEATURE_SUBVOLUME, FEATURE_MASK, FEATURE_COORDINATE = range(3)


class ProtRecovarSubsets(ProtRecovarBase):
    """Selects particles with every piece of their original metadata (CTF, alignment,
    acquisition, latent coordinates) and writes them as a RELION 3.1 STAR file (with optics;
    stacks linked next to it):
    - from k-means clusters of 'recovar analyze' (or every other cluster), or
    - from a feature of a kernel-regression volume (a state, centre or trajectory volume):
      the particles RECOVAR used to reconstruct one local subvolume, given by its index, by a
      mask or by a voxel coordinate (RECOVAR extract_image_subset)."""
    _label = "recovar extract subsets"
    _possibleOutputs = {"outputParticles": emobj.SetOfParticles}

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("source", params.EnumParam, choices=["k-means clusters", "volume feature"],
                      default=FROM_KMEANS, label="Select particles by",
                      help="k-means clusters need no GPU; a volume feature runs RECOVAR.")
        form.addParam("inputClasses", params.PointerParam, pointerClass="SetOfClasses3D",
                      condition="source == %d" % FROM_KMEANS, allowsNull=True,
                      label="k-means classes",
                      help="outputClasses of 'recovar analyze' (class id = k-means index + 1).")
        form.addParam("clusters", params.StringParam, default="0",
                      condition="source == %d" % FROM_KMEANS, label="k-means clusters",
                      help="Comma-separated k-means indices as RECOVAR numbers them (from 0; "
                           "Scipion class id = index + 1).")
        form.addParam("invert", params.BooleanParam, default=False,
                      condition="source == %d" % FROM_KMEANS, label="Invert selection?",
                      help="Keep the particles of every other cluster instead.")
        form.addParam("inputPipeline", params.PointerParam, pointerClass="ProtRecovarPipeline",
                      condition="source == %d" % FROM_VOLUME, allowsNull=True,
                      label="RECOVAR pipeline",
                      help="The pipeline run the volume was computed from (its particles are "
                           "the ones selected).")
        form.addParam("inputVolumes", params.PointerParam, pointerClass="SetOfVolumes",
                      condition="source == %d" % FROM_VOLUME, allowsNull=True,
                      label="Kernel-regression volumes",
                      help="outputVolumes of 'recovar compute state' or 'compute trajectory', or "
                           "the centre volumes of 'recovar analyze'.")
        form.addParam("volumeIndex", params.IntParam, default=1,
                      condition="source == %d" % FROM_VOLUME, label="Volume (item id)",
                      help="Which volume of the set (its id, from 1).")
        form.addParam("feature", params.EnumParam,
                      choices=["subvolume index", "mask", "voxel coordinate"],
                      default=FEATURE_SUBVOLUME, condition="source == %d" % FROM_VOLUME,
                      label="Feature given as",
                      help="The local subvolume whose particles are taken: by its index "
                           "(see the volume's local resolution map), by a mask over the "
                           "feature, or by a voxel coordinate inside it.")
        form.addParam("subvolume", params.IntParam, default=0,
                      condition="source == %d and feature == %d" % (FROM_VOLUME, FEATURE_SUBVOLUME),
                      label="Subvolume index", help="RECOVAR -s.")
        form.addParam("featureMask", params.PointerParam, pointerClass="VolumeMask,Volume",
                      allowsNull=True,
                      condition="source == %d and feature == %d" % (FROM_VOLUME, FEATURE_MASK),
                      label="Feature mask", help="Same box as the volumes (RECOVAR --mask).")
        form.addParam("coordinate", params.StringParam, default="",
                      condition="source == %d and feature == %d" % (FROM_VOLUME, FEATURE_COORDINATE),
                      label="Voxel coordinate", help="x,y,z in voxels (RECOVAR --coordinate).")
        self._defineGpuParams(form)

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        if self.source.get() == FROM_VOLUME:
            self._insertFunctionStep(self.extractFeatureStep, needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def extractFeatureStep(self):
        args = [self.diagnosticsDir()]
        feature = self.feature.get()
        if feature == FEATURE_SUBVOLUME:
            args += ["-s", self.subvolume.get()]
        elif feature == FEATURE_MASK:
            from pwem.emlib.image import ImageHandler
            mask = self._getExtraPath(FILES.FEATURE_MASK)
            partial = self._getExtraPath(".partial_" + FILES.FEATURE_MASK)
            ImageHandler().convert(self.featureMask.get(), partial)
            os.replace(partial, mask)
            args += ["--mask", mask]
        else:
            args += ["--coordinate", self.coordinate.get().replace(" ", "")]
        self.runRecovar("extract_image_subset", args, self._getExtraPath(FILES.FOLDER),
                        pipelineDir=self.inputPipeline.get().pipelineDir())

    def createOutputStep(self):
        if self.source.get() == FROM_VOLUME:
            pipeline = self.inputPipeline.get()
            ids = pipeline.idMap()
            rows = rr.read_subset_indices(self._getExtraPath(FILES.FOLDER), n_rows=len(ids))
            source, chosen, inputPointer = pipeline.outputParticles, ids[rows], self.inputVolumes
            what = "volume %d feature" % self.volumeIndex.get()
        else:
            classes = self.inputClasses.get()
            items = class_items(classes)
            inside = np.isin(items["classId"].to_numpy(), self.classIds())
            chosen = items["id"].to_numpy()[~inside if self.invert.get() else inside]
            source, inputPointer = classes.getImages(), self.inputClasses
            what = "%sk-means clusters %s" % ("all but " if self.invert.get() else "",
                                               self.clusters.get())
        particles = self.particleSubset(source, chosen, "")
        star = self._getExtraPath(FILES.STAR)
        if os.path.isdir(self._getExtraPath(FILES.STAR_FOLDER)):  # a rerun starts clean
            shutil.rmtree(self._getExtraPath(FILES.STAR_FOLDER))
        os.makedirs(os.path.dirname(star))
        export_particles_star(particles, star, link_folder=self._getExtraPath(FILES.STACKS))
        self.info("%d particles (%s) written to %s" % (particles.getSize(), what, star))
        self.registerOutputs({"outputParticles": particles}, inputPointer)

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        if self.source.get() == FROM_VOLUME:
            return self._validateBackend() + self._validateVolumeFeature()
        return self._validateClusters()

    def _validateClusters(self):
        classes = self.inputClasses.get()
        if classes is None:
            return ["Choose the k-means classes."]
        try:
            wanted = self.classIds()
        except ValueError:
            return ["k-means clusters must be integers separated by commas (got %r)."
                    % self.clusters.get()]
        existing = set(class_ids(classes).tolist())
        missing = sorted(i - 1 for i in wanted if i not in existing)
        if missing or not wanted:
            return ["%s has no k-means cluster %s (it has %s)."
                    % (describePointer(self.inputClasses), missing or "chosen",
                       ", ".join(str(i - 1) for i in sorted(existing)))]
        return []

    def _validateVolumeFeature(self):
        errors = self.validatePipeline()
        if self.inputVolumes.get() is None:
            return errors + ["Choose the kernel-regression volumes."]
        try:
            folder = self.diagnosticsDir()
        except ValueError as exc:
            return errors + [str(exc)]
        if not os.path.isdir(folder):
            errors.append("%s was not made by RECOVAR kernel regression: %s is missing."
                          % (describePointer(self.inputVolumes), folder))
        if self.feature.get() == FEATURE_MASK:
            volume = self.inputVolumes.get().getFirstItem()
            mask = self.featureMask.get()
            if mask is None:
                errors.append("Choose the feature mask.")
            elif mask.getXDim() != volume.getXDim():
                errors.append("The feature mask is %d px but the volumes are %d px."
                              % (mask.getXDim(), volume.getXDim()))
        if self.feature.get() == FEATURE_COORDINATE:
            try:
                if len(parseIndices(self.coordinate.get())) != 3:
                    raise ValueError
            except ValueError:
                errors.append("Voxel coordinate must be three integers x,y,z (got %r)."
                              % self.coordinate.get())
        return errors

    def _summary(self):
        if not hasattr(self, "outputParticles"):
            return ["Subset not extracted yet."]
        return ["%d particles; STAR: %s" % (self.outputParticles.getSize(),
                                            self._getExtraPath(FILES.STAR))] + \
            self.provenanceSummary()

    def _methods(self):
        return ["Particles were selected from the RECOVAR [Gilles2025recovar] results."]

    def _citations(self):
        return ["Gilles2025recovar"]

    # --------------------------- UTILS functions ----------------------------
    def classIds(self):
        """Scipion class ids of the chosen k-means indices."""
        return [i + 1 for i in parseIndices(self.clusters.get() or "")]

    def diagnosticsDir(self):
        """RECOVAR's diagnostics folder of the chosen volume (``diagnostics/<stem>/``)."""
        volume = self.inputVolumes.get()[self.volumeIndex.get()]
        if volume is None:
            raise ValueError("%s has no volume with id %d." % (describePointer(self.inputVolumes),
                                                               self.volumeIndex.get()))
        path = os.path.abspath(volume.getFileName())
        stem = os.path.splitext(os.path.basename(path))[0]
        return os.path.join(os.path.dirname(path), "diagnostics", stem)
