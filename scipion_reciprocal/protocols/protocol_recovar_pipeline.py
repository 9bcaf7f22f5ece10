"""RECOVAR pipeline: mean, covariance, principal components and latent embeddings, from
single particles or from cryo-ET tilt series (tilt images of particles)."""
from dataclasses import replace

import numpy as np
import pwem.objects as emobj
from pyworkflow.protocol import params

from ..core import recovar_checks as checks
from ..formats import cryodrgn
from ..formats import recovar_files as rf
from ..formats import recovar_results as rr
from ..plotting.recovar import contrast_figure, eigenvalues_figure, fsc_figure, latent_figure
from .recovar_base import MEMORY_LEVELS, ProtRecovarBase, inputPathIn, savefig
from .recovar_tilt import INPUT_PARTICLES, TiltSeriesInput

FILES = rf.Pipeline
MASK_CHOICES = ["volume", "from_halfmaps", "sphere", "none"]
MASK_VOLUME, MASK_HALFMAPS, MASK_SPHERE, MASK_NONE = range(4)
UNINVERT_CHOICES = ["automatic", "true", "false"]
#: Particle attributes holding the latent coordinates (CsvList), per zdim.
LATENT_ATTR = "_recovar_zdim%d"
LATENT_NOREG_ATTR = "_recovar_zdim%d_noreg"
CONTRAST_ATTR = "_recovar_contrast"


def latentAttribute(zdim, regularized=True):
    """Name of the particle attribute with the ``zdim`` latent coordinates."""
    return (LATENT_ATTR if regularized else LATENT_NOREG_ATTR) % zdim


# A dict, not an Enum: Enum members with equal values (two SetOfVolumes) become aliases.
OUTPUTS = {"outputMean": emobj.Volume, "outputVariances": emobj.SetOfVolumes,
           "outputEigenvolumes": emobj.SetOfVolumes, "outputParticles": emobj.SetOfParticles}


class ProtRecovarPipeline(TiltSeriesInput, ProtRecovarBase):
    """Runs RECOVAR's pipeline: the mean map with its half maps, a regularised estimate of the
    covariance of the conformations, its principal components (eigenvolumes) and, for each
    latent dimension asked for, every particle's coordinates in that space. The particles
    are returned with their coordinates attached (`_recovar_zdim<k>`: regularised, what
    k-means uses; `_recovar_zdim<k>_noreg`: unregularised, what the density estimation uses).
    Cryo-ET: the particles can be tilt images (several per particle), given as Scipion
    particles, a 2D tilt-series STAR file (RELION 4/5, Warp) or a RELION 5 tomography
    project; every tilt image then carries its particle's coordinates.
    """
    _label = "recovar pipeline"
    _possibleOutputs = OUTPUTS
    #: The RECOVAR command this protocol runs (and plans the memory of).
    _recovarCommand = "pipeline"

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        self._defineInputParams(form)
        form.addParam("maskType", params.EnumParam, choices=MASK_CHOICES, default=MASK_SPHERE,
                      label="Mask",
                      help="volume: a mask map (thresholded at 0.5 and softened by RECOVAR); "
                           "from_halfmaps: RECOVAR makes one from the mean half maps; sphere: "
                           "a spherical mask; none: no mask. The heterogeneity outside the mask "
                           "is ignored, so a tight mask of the molecule gives cleaner components.")
        form.addParam("maskVolume", params.PointerParam, pointerClass="Volume",
                      condition="maskType == %d" % MASK_VOLUME, label="Mask volume",
                      help="Same box as the particles, values 0..1.")
        form.addParam("maskDilation", params.IntParam, default=0, label="Mask dilation (iterations)",
                      condition="maskType == %d" % MASK_VOLUME,
                      help="Binary dilations of the mask (RECOVAR --mask-dilate-iter); 0 keeps it.")
        form.addParam("focusMask", params.PointerParam, pointerClass="Volume", allowsNull=True,
                      label="Focus mask (optional)",
                      help="Restricts the covariance to a region (e.g. a flexible domain); same "
                           "box as the particles.")
        form.addParam("zdims", params.StringParam, default="1,2,4,10,20",
                      label="Latent dimensions",
                      help="Comma-separated list; an embedding is computed for each. Larger "
                           "dimensions cost more time and memory (zdim 20 is about half the "
                           "embedding time).")
        form.addParam("correctContrast", params.BooleanParam, default=False,
                      label="Correct contrast?",
                      help="Estimate a contrast (scale) per particle (RECOVAR --correct-contrast);"
                           " useful when ice thickness varies.")
        form.addParam("uninvertData", params.EnumParam, choices=UNINVERT_CHOICES, default=0,
                      label="Un-invert data",
                      help="RECOVAR --uninvert-data: whether images have dark protein and must be "
                           "inverted. 'automatic' lets RECOVAR guess from the mean.")
        group = form.addGroup("Advanced", expertLevel=params.LEVEL_ADVANCED)
        group.addParam("downsample", params.IntParam, default=256, label="Downsample to (px)",
                       help="Images larger than this are downsampled (unless within 12.5 %%) "
                            "into a full copy of the stack; 0 never downsamples. Smaller boxes "
                            "are much faster and lighter.")
        group.addParam("ignoreZeroFrequency", params.BooleanParam, default=False,
                       label="Ignore zero frequency?",
                       help="Drop the zero frequency (RECOVAR --ignore-zero-frequency), for data "
                            "with uncorrected per-image offsets.")
        self._defineMemoryParams(form)
        self._defineTiltParams(form)
        self._defineExtraParams(form)
        self._defineGpuParams(form)

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep, needsGPU=False)
        self._insertFunctionStep(self.pipelineStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def convertInputStep(self):
        if self.isTiltSeries():
            self.convertTiltSeriesStep()
        else:
            self.convertParticlesStep(self.inputParticles)

    def writeExtraInputs(self, folder):
        from pwem.emlib.image import ImageHandler
        if self.maskType.get() == MASK_VOLUME:
            ImageHandler().convert(self.maskVolume.get(), inputPathIn(folder, FILES.MASK))
        if self.focusMask.get() is not None:
            ImageHandler().convert(self.focusMask.get(), inputPathIn(folder, FILES.FOCUS_MASK))

    def pipelineStep(self):
        self.runRecovar(self._recovarCommand, self.pipelineArguments(), self.pipelineDir(),
                        pipelineDir=self.pipelineDir())

    def pipelineArguments(self):
        """The arguments of RECOVAR's pipeline from the form (without -o)."""
        args = [self.inputFile(cryodrgn.PARTICLES_STAR), "--poses", self.inputFile(cryodrgn.POSES_PKL),
                "--ctf", self.inputFile(cryodrgn.CTF_PKL), "--zdim", ",".join(map(str, self.zdimList())),
                "--uninvert-data", UNINVERT_CHOICES[self.uninvertData.get()]]
        if self.maskType.get() == MASK_VOLUME:
            args += ["--mask", self._getExtraPath(FILES.MASK)]
            if self.maskDilation.get() > 0:
                args += ["--mask-dilate-iter", self.maskDilation.get()]
        else:
            args += ["--mask", MASK_CHOICES[self.maskType.get()]]
        if self.focusMask.get() is not None:
            args += ["--focus-mask", self._getExtraPath(FILES.FOCUS_MASK)]
        if self.correctContrast.get():
            args.append("--correct-contrast")
        if self.ignoreZeroFrequency.get():
            args.append("--ignore-zero-frequency")
        # Memory options (--downsample included) come from memoryArguments.
        return args + self.tiltArguments()

    def createOutputStep(self):
        with self.plotFolder() as plots:
            outputs = self.pipelineOutputs(self.pipelineDir(), plots)
        self.registerPipelineOutputs(outputs)

    def pipelineOutputs(self, folder, plots, rows=None):
        """Mean, variances, eigenvolumes and the particles (``rows`` of the id map, all when
        None) with their latent coordinates, from a pipeline folder; its figures saved in
        ``plots`` (the plot :class:`ResultFolder`)."""
        from ..formats.mrc import read_map
        volumes = rr.pipeline_volumes(folder)
        _, voxel = read_map(volumes.mean)
        self._savePlots(plots, folder)

        mean = emobj.Volume(location=str(volumes.mean))
        mean.setSamplingRate(voxel)
        mean.setHalfMaps([str(volumes.half1), str(volumes.half2)])
        mean.setObjLabel("recovar mean")
        variances = self._volumeSet("variances", voxel,
                                    [("variance%d" % k, p) for k, p in volumes.variances.items()])
        eigen = self._volumeSet("eigenvolumes", voxel,
                                [("eigenvolume%d" % i, p) for i, p in enumerate(volumes.eigenvolumes)])
        particles = self._particlesWithLatents(folder, rows)
        return dict(zip(OUTPUTS, (mean, variances, eigen, particles)))

    def registerPipelineOutputs(self, outputs):
        for name, output in outputs.items():
            self._defineOutputs(**{name: output})
            if self.inputType.get() == INPUT_PARTICLES:
                self._defineSourceRelation(self.inputParticles, output)

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = self._validateBackend() + self.validateInput()
        particles = self.inputParticles.get() if self.inputType.get() == INPUT_PARTICLES else None
        if self.maskType.get() == MASK_VOLUME:
            if self.maskVolume.get() is None:
                errors.append("Choose a mask volume, or another mask type.")
            errors += self.validateMaskBox(self.maskVolume, particles, "The mask")
        errors += self.validateMaskBox(self.focusMask, particles, "The focus mask")
        try:
            zdims = self.zdimList()
            if not zdims or min(zdims) < 1:
                raise ValueError
        except ValueError:
            errors.append("Latent dimensions must be positive integers separated by commas "
                          "(got %r)." % self.zdims.get())
            return errors
        if particles is not None and not errors:
            veryLow = MEMORY_LEVELS[self.memoryOption.get()] == "very low"
            errors += ["Latent dimensions %s: %s." % (self.zdims.get(), e) for e in
                       checks.zdim_errors(zdims, particles.getSize(), veryLow)]
            errors += self.validateMemory()
        return errors

    def _warnings(self):
        warnings = []
        if not self._visibleGpus():
            warnings.append("No GPU is used: RECOVAR runs on the CPU (--accept-cpu). Expect "
                            "about 10 min for 400 particles of 32 px; real data sets need a GPU.")
        return warnings + self.memoryWarnings()

    def _summary(self):
        if not hasattr(self, "outputMean"):
            return ["RECOVAR pipeline not finished yet."]
        lines = ["Latent dimensions: %s; %d %s." % (self.zdims.get(),
                                                   self.outputParticles.getSize(),
                                                   "tilt images of %d particles" % self.unitCount()
                                                   if self.isTiltSeries() else "particles")]
        try:
            eigenvalues = rr.read_eigenvalues(self.pipelineDir())
            lines.append("First eigenvalues: %s" % ", ".join("%.3g" % v for v in eigenvalues[:5]))
        except rr.RecovarResultError:
            pass
        return lines + self.provenanceSummary()

    def _methods(self):
        return ["Conformational heterogeneity was analysed with RECOVAR [Gilles2025recovar] "
                "(mask %s, latent dimensions %s%s)." % (MASK_CHOICES[self.maskType.get()],
                                                        self.zdims.get(), self.tiltMethods())] + \
            self.correctionMethods()

    def _citations(self):
        return ["Gilles2025recovar"]

    # --------------------------- UTILS functions ----------------------------
    def zdimList(self):
        return [int(z) for z in self.zdims.get().replace(" ", "").split(",") if z]

    def pipelineDir(self):
        return self._getExtraPath(FILES.FOLDER)

    def workingBox(self):
        """The box RECOVAR worked at (after downsampling)."""
        return self.outputMean.getXDim()

    def formMemoryOptions(self, command):
        return replace(self.formMemoryRequest(command, 0, 0),
                       downsample=max(0, self.downsample.get()))

    def memoryRequest(self):
        particles = self.memoryParticles()
        if particles is None or not particles.getXDim():
            return None
        return replace(self.formMemoryOptions(self._recovarCommand), box=particles.getXDim(),
                       n_particles=particles.getSize())

    def _savePlots(self, plots, folder):
        savefig(plots, FILES.EIGENVALUES, eigenvalues_figure(rr.read_eigenvalues(folder)))
        fsc = rr.read_mean_fsc(folder)
        savefig(plots, FILES.MEAN_FSC,
                fsc_figure(fsc["frequency"], {"unmasked": fsc["unmasked"], "masked": fsc["masked"]}))
        zdims = [z for z in rr.available_zdims(folder) if z >= 2]
        if self.correctContrast.get() and rr.available_zdims(folder):
            contrasts = rr.read_embedding(folder, rr.available_zdims(folder)[-1]).contrasts
            savefig(plots, FILES.CONTRASTS, contrast_figure(contrasts))
        if zdims:
            embedding = rr.read_embedding(folder, zdims[-1])
            savefig(plots, FILES.LATENT % zdims[-1],
                    latent_figure(embedding.coords, title="zdim %d (regularised)" % zdims[-1]))

    def _volumeSet(self, suffix, voxel, named):
        volumes = self._createSetOfVolumes(suffix)
        volumes.setSamplingRate(voxel)
        for label, path in named:
            volume = emobj.Volume(location=str(path))
            volume.setSamplingRate(voxel)
            volume.setObjLabel(label)
            volumes.append(volume)
        return volumes

    def _particlesWithLatents(self, folder, rows=None):
        """The input particles (an SQL copy of their rows; only ``rows`` when given) with one
        CsvList column per latent space: a million particles are never built as Python
        objects. Tilt images carry the coordinates of their particle."""
        ids = self.idMap()
        rows = np.arange(len(ids)) if rows is None else np.asarray(rows, dtype=np.int64)
        attributes = {}
        for zdim in rr.available_zdims(folder):
            for regularized in (True, False):
                coords = self.rowValues(self.latentCoords(zdim, regularized, folder))[rows]
                attributes[latentAttribute(zdim, regularized)] = (
                    "CsvList", [",".join("%.6g" % v for v in row) for row in coords])
                if (regularized and self.correctContrast.get() and CONTRAST_ATTR not in attributes
                        and not self.isTiltSeries()):
                    contrasts = rr.read_embedding(folder, zdim, n_rows=len(ids)).contrasts
                    attributes[CONTRAST_ATTR] = ("Float", contrasts[rows].astype(float).tolist())
        particles = self.particleSubset(self.sourceParticles(), ids[rows], "", attributes)
        self.info("Attached %s to %d particles" % (", ".join(attributes), particles.getSize()))
        return particles

    def latentCoords(self, zdim, regularized=True, folder=None):
        """``(n_units, zdim)`` latent coordinates of RECOVAR's particles (the rows of the id
        map; for tilt series, the particles in :meth:`unitRows` order), NaN where left out."""
        coords = rr.read_embedding(folder or self.pipelineDir(), zdim, regularized).coords
        n = self.unitCount()
        if len(coords) > n:
            raise rr.RecovarResultError("zdim %d has %d rows but the inputs have %d particles"
                                        % (zdim, len(coords), n))
        padded = np.full((n, coords.shape[1]), np.nan)
        padded[:len(coords)] = coords
        return padded

    def unitRows(self):
        """RECOVAR particle of every row of the id map (tilt series), or None (one per row)."""
        return cryodrgn.read_tilt_units(self.inputFile(cryodrgn.TILT_UNITS_CSV))

    def unitCount(self):
        """Number of RECOVAR particles: rows of the id map, or tilt-series particles."""
        units = self.unitRows()
        return len(self.idMap()) if units is None else int(units.max()) + 1

    def rowValues(self, perUnit):
        """Values per RECOVAR particle (k-means labels, coordinates) as values per row."""
        units = self.unitRows()
        return np.asarray(perUnit) if units is None else np.asarray(perUnit)[units]

    def unitsToRows(self, unitIndices):
        """Rows (sorted) of the given RECOVAR particles (all their tilt images)."""
        units = self.unitRows()
        if units is None:
            return np.sort(np.asarray(unitIndices, dtype=np.int64))
        return np.flatnonzero(np.isin(units, unitIndices))
