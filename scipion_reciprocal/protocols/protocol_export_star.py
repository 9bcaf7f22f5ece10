"""Export a SetOfParticles as a RELION 3.1+ STAR file (optics table, linked stacks)."""
from pwem.protocols import EMProtocol
from pyworkflow.object import Integer, String
from pyworkflow.protocol import params

from ..convert.particles import ConversionError, export_particles_star, missing_ctf_error
from .inputs import describePointer

STAR_NAME = "particles.star"
STACKS_FOLDER = "Stacks"


class ProtExportParticlesStar(EMProtocol):
    """Writes particles as a STAR file that RELION 3.1, 4 and 5 import as is: a data_optics
    table built from the acquisition, CTF values, and the projection alignment converted to
    RELION's Euler angles and origins. The stacks are symlinked next to the STAR file, so the
    export folder works as a RELION project directory (no image is copied)."""
    _label = "export particles to RELION"
    _possibleOutputs = {}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.starFile = String()
        self.exportedCount = Integer()

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Particles",
                      help="Particles to export. Their CTF, alignment and acquisition go into "
                           "the STAR file; the images stay where they are (linked).")
        form.addParam("writeCtf", params.BooleanParam, default=True, label="Write CTF?",
                      help="Write the CTF columns (defocus U/V, angle, phase shift). RELION "
                           "refinement and classification need them; set No only to export "
                           "particles that have no CTF estimate.")

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.exportStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def exportStep(self):
        particles = self.inputParticles.get()
        star = self._getExtraPath(STAR_NAME)
        try:
            table = export_particles_star(particles, star, link_folder=self._getExtraPath(STACKS_FOLDER),
                                          with_ctf=self.writeCtf.get())
        except ConversionError as error:
            raise RuntimeError(str(error)) from error
        self.info("Wrote %d particles (%d optics group(s)) to %s"
                  % (len(table), table["rlnOpticsGroup"].nunique(), star))
        self.starFile.set(star)
        self.exportedCount.set(len(table))
        self._store(self.starFile, self.exportedCount)

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        particles = self.inputParticles.get()
        if particles is None:
            return ["Choose the input particles."]
        error = missing_ctf_error(particles, describePointer(self.inputParticles))
        if self.writeCtf.get() and error:
            return [error + " Or set 'Write CTF?' to No."]
        return []

    def _summary(self):
        if not self.starFile.hasValue():
            return ["Not exported yet."]
        return ["%d particles written to %s (import it in RELION from that folder)."
                % (self.exportedCount.get(), self.starFile.get())]

    def _methods(self):
        if not self.starFile.hasValue():
            return []
        return ["%d particles were exported to RELION 3.1 STAR format with an optics table."
                % self.exportedCount.get()]

    def _citations(self):
        return ["Zivanov2018relion3"]
