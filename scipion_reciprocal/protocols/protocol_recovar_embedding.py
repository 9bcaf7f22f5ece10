"""RECOVAR reconstruct_from_external_embedding: volumes from another method's latent space."""
import os
import pickle

import numpy as np
import pwem.objects as emobj
from pyworkflow.protocol import params

from ..convert.set_sql import read_set_items
from ..core import recovar_checks as checks
from ..formats import cryodrgn
from ..formats import recovar_files as rf
from ..formats import recovar_results as rr
from ..plotting.recovar import latent_figure
from .inputs import describePointer
from .protocol_recovar_pipeline import UNINVERT_CHOICES
from .protocol_recovar_state import readPointsFile
from .recovar_base import ProtRecovarBase, inputPathIn, savefig

FILES = rf.ExternalEmbedding
EMBEDDING_FROM_ATTRIBUTE, EMBEDDING_FROM_FILE = range(2)
TARGETS_FROM_KMEANS, TARGETS_FROM_FILE = range(2)


def parseCoordinates(values):
    """Latent coordinates stored on particles (``"0.1,0.2"`` strings) -> ``(N, d)`` floats."""
    rows = [np.array(str(v).strip("[]").replace(",", " ").split(), dtype=np.float64)
            for v in values]
    if not rows or len({len(r) for r in rows}) != 1 or not len(rows[0]):
        raise ValueError("the particles' coordinates are missing or of different lengths")
    return np.vstack(rows)


class ProtRecovarExternalEmbedding(ProtRecovarBase):
    """Reconstructs volumes by RECOVAR's kernel regression at chosen points of a latent space
    computed by another method (e.g. cryoDRGN, 3DFlex): the embedding comes from a particle
    attribute (one comma-separated list per particle) or from a pickle in the particles'
    order (cryoDRGN's z.pkl). The points are k-means centres of the embedding, or the rows
    of a text file."""
    _label = "recovar volumes from external embedding"
    _possibleOutputs = {"outputVolumes": emobj.SetOfVolumes}
    _lazyOption = False  # RECOVAR 1.0.5's command has no --lazy

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Particles", help="Particles with CTF and 3D alignment; even box.")
        form.addParam("embeddingSource", params.EnumParam,
                      choices=["particle attribute", "pickle file"],
                      default=EMBEDDING_FROM_ATTRIBUTE, label="Embedding from",
                      help="Where each particle's latent coordinates are.")
        form.addParam("embeddingAttribute", params.StringParam, default="",
                      condition="embeddingSource == %d" % EMBEDDING_FROM_ATTRIBUTE,
                      label="Particle attribute",
                      help="Name of the attribute with the coordinates, e.g. _cryodrgnZValues "
                           "or _recovar_zdim4.")
        form.addParam("embeddingFile", params.FileParam, default="",
                      condition="embeddingSource == %d" % EMBEDDING_FROM_FILE,
                      label="Embedding pickle",
                      help="(N, d) array pickled, one row per particle in the set's order "
                           "(cryoDRGN z.<epoch>.pkl of the same particles).")
        form.addParam("targetsSource", params.EnumParam, choices=["k-means centres", "text file"],
                      default=TARGETS_FROM_KMEANS, label="Volumes at",
                      help="k-means centres of the embedding, or the points of a text file.")
        form.addParam("nTargets", params.IntParam, default=5,
                      condition="targetsSource == %d" % TARGETS_FROM_KMEANS,
                      label="Number of centres", help="k-means clusters of the embedding.")
        form.addParam("targetsFile", params.FileParam, default="",
                      condition="targetsSource == %d" % TARGETS_FROM_FILE, label="Points file",
                      help="Text file, one point per row, as many columns as the embedding.")
        form.addParam("uninvertData", params.EnumParam, choices=UNINVERT_CHOICES, default=1,
                      label="Un-invert data",
                      help="RECOVAR --uninvert-data: 'true' for RELION/Scipion particles "
                           "(white protein).")
        form.addParam("bfactor", params.FloatParam, default=0, label="B-factor (A^2)",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="Sharpening B-factor of the volumes (RECOVAR --Bfactor).")
        self._defineMemoryParams(form)
        self._defineExtraParams(form)
        self._defineGpuParams(form)

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep, needsGPU=False)
        self._insertFunctionStep(self.reconstructStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def convertInputStep(self):
        self.convertParticlesStep(self.inputParticles)

    def writeExtraInputs(self, folder):
        embedding = self.embedding(cryodrgn.read_id_map(os.path.join(folder, cryodrgn.ID_MAP_CSV)))
        with open(inputPathIn(folder, FILES.EMBEDDING), "wb") as handle:
            pickle.dump(embedding.astype(np.float32), handle, protocol=4)
        targets = self.targets(embedding)
        np.savetxt(inputPathIn(folder, FILES.TARGETS), targets)
        self.info("Embedding of %d particles x %d dimensions; %d target point(s)"
                  % (embedding.shape + (len(targets),)))

    def reconstructStep(self):
        # Its --n-bins is parsed as a float in RECOVAR 1.0.5 and crashes: left at the default.
        args = [self.inputFile(cryodrgn.PARTICLES_STAR),
                "--poses", self.inputFile(cryodrgn.POSES_PKL),
                "--ctf", self.inputFile(cryodrgn.CTF_PKL),
                "--embedding", self._getExtraPath(FILES.EMBEDDING),
                "--target", self._getExtraPath(FILES.TARGETS),
                "--uninvert-data", UNINVERT_CHOICES[self.uninvertData.get()],
                "--Bfactor", self.bfactor.get()]
        self.runRecovar("reconstruct_from_external_embedding", args,
                        self._getExtraPath(FILES.FOLDER))

    def createOutputStep(self):
        volumes = self.kernelVolumeSet(self._getExtraPath(FILES.FOLDER), "state", "volumes",
                                       "embedding point %d")
        if volumes is None:
            raise rr.RecovarResultError(self._getExtraPath(FILES.FOLDER), "no volumes written")
        with open(self._getExtraPath(FILES.EMBEDDING), "rb") as handle:
            embedding = pickle.load(handle)
        targets = readPointsFile(self._getExtraPath(FILES.TARGETS))
        with self.plotFolder() as plots:
            if embedding.shape[1] >= 2:
                savefig(plots, FILES.EMBEDDING_PLOT,
                        latent_figure(embedding, centers=targets, title="external embedding"))
        self.saveChimeraxSeries(volumes, FILES.VOLUMES_CXC, "RECOVAR external embedding")
        self.registerOutputs({"outputVolumes": volumes}, self.inputParticles)

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = self._validateBackend() + self.validateParticles(self.inputParticles)
        if errors:
            return errors
        try:
            embedding = self.embedding()
            if self.targetsSource.get() == TARGETS_FROM_FILE:
                targets = self.targets(embedding)
                if targets.shape[1] != embedding.shape[1]:
                    errors.append("Points file %s has %d columns but the embedding has %d."
                                  % (self.targetsFile.get(), targets.shape[1], embedding.shape[1]))
            elif not 1 <= self.nTargets.get() <= len(embedding):
                errors.append("Number of centres must be between 1 and %d." % len(embedding))
        except (ValueError, OSError, KeyError, pickle.UnpicklingError) as exc:
            errors.append(str(exc))
        errors += self._validateHalfSets()
        return errors + (self.validateMemory() if not errors else [])

    def _validateHalfSets(self):
        """RECOVAR 1.0.5 crashes (IndexError) when a half set holds exactly its minimum of
        particles per bin, and this command has no --n-min-particles to avoid it."""
        particles = self.inputParticles.get()
        items = read_set_items(particles.getFileName(), ["_rlnRandomSubset"], skip_missing=True)
        subsets = items["_rlnRandomSubset"].to_numpy() if "_rlnRandomSubset" in items else None
        sizes = checks.half_set_sizes(subsets, len(items))
        if checks.DEFAULT_MIN_PARTICLES in sizes:
            return ["%s splits into half sets of %s particles: RECOVAR 1.0.5's "
                    "reconstruct_from_external_embedding crashes (IndexError) when a half set "
                    "holds exactly %d particles (its fixed minimum per bin). Add or remove a "
                    "particle, or change the particles' random subsets."
                    % (describePointer(self.inputParticles), " and ".join(map(str, sizes)),
                       checks.DEFAULT_MIN_PARTICLES)]
        return []

    def _warnings(self):
        return self.memoryWarnings()

    def _summary(self):
        if not hasattr(self, "outputVolumes"):
            return ["Volumes not computed yet."]
        return ["%d volume(s) from the external embedding." % self.outputVolumes.getSize()] + \
            self.provenanceSummary()

    def _methods(self):
        return ["Volumes were reconstructed from an external latent embedding with RECOVAR's "
                "kernel regression [Gilles2025recovar]."]

    def _citations(self):
        return ["Gilles2025recovar"]

    # --------------------------- UTILS functions ----------------------------
    def memoryRequest(self):
        particles = self.inputParticles.get()
        if particles is None or not particles.getXDim():
            return None
        return self.formMemoryRequest("reconstruct_from_external_embedding",
                                      particles.getXDim(), particles.getSize())

    def embedding(self, ids=None):
        """``(N, d)`` latent coordinates, rows in the order of ``ids`` (default: the set's)."""
        particles = self.inputParticles.get()
        name = describePointer(self.inputParticles)
        if self.embeddingSource.get() == EMBEDDING_FROM_FILE:
            path = self.embeddingFile.get()
            if not path or not os.path.isfile(path):
                raise ValueError("Embedding pickle %r does not exist." % path)
            with open(path, "rb") as handle:
                values = np.asarray(pickle.load(handle), dtype=np.float64)
            if values.ndim != 2 or len(values) != particles.getSize():
                raise ValueError("Embedding %s has shape %s: expected (%d, d), one row per "
                                 "particle of %s." % (path, values.shape, particles.getSize(), name))
            setIds = read_set_items(particles.getFileName(), [])["id"].to_numpy()
            byId = dict(zip(setIds.tolist(), values))
        else:
            attribute = self.embeddingAttribute.get()
            items = read_set_items(particles.getFileName(), [attribute], skip_missing=True)
            if attribute not in items:
                raise ValueError("The particles of %s have no attribute %r." % (name, attribute))
            try:
                values = parseCoordinates(items[attribute])
            except ValueError as exc:
                raise ValueError("%s attribute %s: %s." % (name, attribute, exc)) from None
            byId = dict(zip(items["id"].tolist(), values))
        order = byId.keys() if ids is None else ids.tolist()
        return np.vstack([byId[i] for i in order])

    def targets(self, embedding):
        if self.targetsSource.get() == TARGETS_FROM_FILE:
            path = self.targetsFile.get()
            if not path or not os.path.isfile(path):
                raise ValueError("Points file %r does not exist." % path)
            return readPointsFile(path)
        from sklearn.cluster import KMeans
        kmeans = KMeans(n_clusters=self.nTargets.get(), n_init=10, random_state=0)
        return kmeans.fit(embedding).cluster_centers_
