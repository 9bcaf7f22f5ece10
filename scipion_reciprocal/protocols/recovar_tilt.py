"""Cryo-ET input of the RECOVAR pipeline: tilt images of particles (RECOVAR's tilt series).

RECOVAR 1.0.5 takes one 2D row per tilt image (cryoDRGN-ET form) with ``rlnGroupName``
naming the particle, and its cryo-ET CTF: the tilt image's defocus (which already holds the
particle's depth), a dose filter and a scale. Three CTF models read the dose and the tilt
from the STAR differently (``--tilt-series-ctf``):

- ``relion5``: dose = ``rlnMicrographPreExposure``, scale = ``rlnCtfScalefactor`` (RELION 5's
  cosine of the tilt);
- ``warp``: dose = ``-rlnCtfBfactor / 4`` (Warp writes ``-4 x dose``), scale =
  ``rlnCtfScalefactor``;
- ``from_dose`` (a dose-symmetric scheme): dose = ``n x --dose-per-tilt`` and tilt =
  ``ceil(n / 2) x --angle-per-tilt`` for the n-th tilt in acquisition order (RECOVAR orders
  the tilts of a particle by ``rlnCtfBfactor``).

Three inputs give those rows: Scipion particles (each a tilt image, e.g. a Warp/RELION 2D STAR
imported in Scipion: the import keeps ``_rlnGroupName``, ``_rlnCtfScalefactor``,
``_rlnCtfBfactor``), a 2D tilt-series STAR file read here, or a RELION 5 tomography project
converted by RECOVAR's ``parse_relion5_tomo``. The last two become a particle set in the
protocol's extra folder (``recovar_files.TiltSeries``), the source of its output particles.
"""
import os

import pwem.objects as emobj
from pyworkflow.protocol import params

from ..convert.particles import ConversionError, particles_table, star_rows_to_particles
from ..formats import cryodrgn
from ..formats import recovar_files as rf
from ..formats.errors import FormatError
from ..formats.relion_tomo import project_root, relion5_errors
from ..formats.relion import merge_optics
from ..formats.star import StarTable, read_particles_star
from .inputs import describePointer

INPUT_CHOICES = ["particles", "tilt-series STAR (2D)", "RELION 5 tomography"]
INPUT_PARTICLES, INPUT_TILT_STAR, INPUT_RELION5 = range(3)
TILT_CTF_CHOICES = ["relion5", "warp", "dose-symmetric"]
TILT_CTF_RELION5, TILT_CTF_WARP, TILT_CTF_DOSE_SYMMETRIC = range(3)
#: RECOVAR's --tilt-series-ctf value of each choice.
TILT_CTF_MODES = ["relion5", "warp", "from_dose"]
#: Columns each CTF model reads: (what it is, column) pairs.
_NEEDED = {
    TILT_CTF_RELION5: [("the dose", "rlnMicrographPreExposure"),
                       ("the tilt scale", "rlnCtfScalefactor")],
    TILT_CTF_WARP: [("the dose", "rlnCtfBfactor"), ("the tilt scale", "rlnCtfScalefactor")],
    TILT_CTF_DOSE_SYMMETRIC: [("the tilt order", "rlnCtfBfactor"),
                              ("the tilt scale", "rlnCtfScalefactor")],
}
_STAR_NEEDED = ("rlnImageName", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnDefocusU",
                "rlnDefocusV", "rlnGroupName")


class TiltSeriesInput:
    """Mixin of the RECOVAR pipeline protocols: the input form (particles, tilt-series STAR,
    RELION 5 project), the tilt-series options and their conversion."""

    # --------------------------- DEFINE param functions ---------------------
    def _defineInputParams(self, form):
        form.addParam("inputType", params.EnumParam, choices=INPUT_CHOICES,
                      default=INPUT_PARTICLES, label="Input",
                      help="particles: a Scipion set (single particles, or tilt images of "
                           "particles: see 'Tilt series'); tilt-series STAR (2D): a RELION 4/5 "
                           "or Warp STAR file with one row per tilt image (cryoDRGN-ET form); "
                           "RELION 5 tomography: tomograms.star and the particles.star of a "
                           "RELION 5 Extract job written as 2D stacks, converted by RECOVAR's "
                           "parse_relion5_tomo.")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      condition="inputType == %d" % INPUT_PARTICLES, label="Particles",
                      help="Particles with CTF and 3D alignment (angles and shifts), e.g. from a "
                           "consensus 3D refinement. The box must be even.")
        form.addParam("tiltStar", params.FileParam, condition="inputType == %d" % INPUT_TILT_STAR,
                      label="Tilt-series particle STAR",
                      help="One row per tilt image: rlnImageName, angles and defocus of the "
                           "tilt image, rlnGroupName (the particle it belongs to), "
                           "rlnCtfScalefactor and the dose (rlnMicrographPreExposure for RELION "
                           "5, rlnCtfBfactor for Warp), plus data_optics.")
        form.addParam("tiltStarRoot", params.FolderParam, allowsNull=True,
                      condition="inputType == %d" % INPUT_TILT_STAR, label="Images relative to",
                      help="Folder the STAR's image paths start from (the RELION or Warp "
                           "project); empty: the STAR file's folder.")
        form.addParam("tomogramsStar", params.FileParam,
                      condition="inputType == %d" % INPUT_RELION5, label="Tomograms STAR",
                      help="RELION 5 tomograms.star (e.g. of a Tomograms, Polish or "
                           "CtfRefine job); its tilt-series STAR files give every tilt's "
                           "geometry, defocus and dose.")
        form.addParam("tomoParticlesStar", params.FileParam,
                      condition="inputType == %d" % INPUT_RELION5, label="Particles STAR",
                      help="particles.star of a RELION 5 Extract (2D stacks) or Refine job: 3D "
                           "coordinates, orientations and visible frames of the particles.")

    def _defineTiltParams(self, form):
        group = form.addGroup("Tilt series (cryo-ET)")
        group.addParam("tiltSeries", params.BooleanParam, default=False,
                       condition="inputType == %d" % INPUT_PARTICLES,
                       label="Particles are tilt images?",
                       help="Yes: each particle of the set is one tilt image of a particle "
                            "(cryo-ET); the items need _rlnGroupName (which particle), "
                            "_rlnCtfScalefactor and the dose of the CTF model below. RECOVAR "
                            "then gives one latent point per particle (RECOVAR --tilt-series).")
        group.addParam("tiltCtf", params.EnumParam, choices=TILT_CTF_CHOICES,
                       default=TILT_CTF_RELION5,
                       condition="tiltSeries or inputType == %d" % INPUT_TILT_STAR,
                       label="Tilt CTF model",
                       help="How RECOVAR reads each tilt image's dose and tilt "
                            "(--tilt-series-ctf). relion5: dose from rlnMicrographPreExposure, "
                            "scale from rlnCtfScalefactor. warp: dose = -rlnCtfBfactor/4, scale "
                            "from rlnCtfScalefactor. dose-symmetric: dose and tilt from the "
                            "tilt's rank (ordered by rlnCtfBfactor) times 'Dose per tilt' and "
                            "'Angle per tilt'. RELION 5 projects always use relion5.")
        group.addParam("dosePerTilt", params.FloatParam, default=0,
                       condition="tiltCtf == %d and (tiltSeries or inputType == %d)"
                                 % (TILT_CTF_DOSE_SYMMETRIC, INPUT_TILT_STAR),
                       label="Dose per tilt (e/A^2)",
                       help="Electron dose of each tilt image (--dose-per-tilt).")
        group.addParam("anglePerTilt", params.FloatParam, default=0,
                       condition="tiltCtf == %d and (tiltSeries or inputType == %d)"
                                 % (TILT_CTF_DOSE_SYMMETRIC, INPUT_TILT_STAR),
                       label="Angle per tilt (deg)",
                       help="Tilt increment of the dose-symmetric scheme (--angle-per-tilt).")
        group.addParam("nTilts", params.IntParam, default=0,
                       condition="tiltSeries or inputType != %d" % INPUT_PARTICLES,
                       label="Tilts per particle",
                       help="Use only the first N tilts of each particle (the least exposed; "
                            "--ntilts); 0 uses all.")
        group.addParam("sharedContrast", params.BooleanParam, default=False,
                       condition="tiltSeries or inputType != %d" % INPUT_PARTICLES,
                       label="One contrast per particle?",
                       help="With 'Correct contrast', estimate one contrast for all tilts of a "
                            "particle instead of one per tilt image "
                            "(--shared_contrast_across_tilts).")

    # --------------------------- STEPS functions ----------------------------
    def convertTiltSeriesStep(self):
        """RECOVAR's inputs (with the tilt columns and the tilt units) from any tilt input."""
        kind = self.inputType.get()
        if kind == INPUT_PARTICLES:
            particles, name = self.inputParticles.get(), describePointer(self.inputParticles)
        else:
            star, root = self._tiltStar()
            particles, name = self._importTiltStar(star, root), str(star)
        try:
            table, optics = particles_table(particles)
        except ConversionError as exc:
            raise ConversionError("%s: %s" % (name, exc)) from None
        rows = merge_optics(table, optics)
        missing = self.missingTiltColumns(rows.columns)
        if missing:
            raise ConversionError("%s: %s" % (name, missing))
        inputs = self.writeInputs(particles, table, rows, tiltSeries=True)
        self.info("Wrote RECOVAR inputs for %d tilt images of %d particles (%d px, %.3f A/px)"
                  % (inputs.n_particles, self.unitCount(), inputs.box, inputs.pixel_size))

    def _tiltStar(self):
        """The 2D tilt STAR and the folder its image paths start from."""
        if self.inputType.get() == INPUT_TILT_STAR:
            star = os.path.abspath(self.tiltStar.get())
            return star, os.path.abspath(self.tiltStarRoot.get() or os.path.dirname(star))
        out = self._getExtraPath(rf.TiltSeries.RELION5_STAR)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tomograms = os.path.abspath(self.tomogramsStar.get())
        self.info("Converting the RELION 5 project with RECOVAR's parse_relion5_tomo")
        self.runBackend("-m recovar.commands.parse_relion5_tomo", "-t %s -p %s -o %s" % (
            tomograms, os.path.abspath(self.tomoParticlesStar.get()), os.path.abspath(out)),
            useGpu=False)
        return out, str(project_root(tomograms))

    def _importTiltStar(self, star, root):
        """The STAR's rows as a Scipion SetOfParticles in extra (the output's source)."""
        path = self._getExtraPath(rf.TiltSeries.PARTICLES_SQLITE)
        if os.path.exists(path):
            os.remove(path)  # a resumed step rewrites it
        try:
            document = read_particles_star(star)
        except FormatError as exc:
            raise ConversionError(str(exc)) from None
        if document.optics is None or "rlnImagePixelSize" not in document.optics:
            raise ConversionError("%s has no data_optics table with rlnImagePixelSize" % star)
        pixel = float(document.optics["rlnImagePixelSize"].iloc[0])
        particles = emobj.SetOfParticles(filename=path)
        star_rows_to_particles(document.particles, document.optics, particles, pixel, root)
        particles.write()
        self.info("Read %d tilt images from %s" % (particles.getSize(), star))
        particles.close()
        return self.sourceParticles()

    # --------------------------- INFO functions -----------------------------
    def validateInput(self):
        """Errors of the input (particles, or tilt-series files and options)."""
        kind = self.inputType.get()
        errors = []
        if kind == INPUT_PARTICLES:
            errors += self.validateParticles(self.inputParticles)
        elif kind == INPUT_TILT_STAR:
            errors += self._validateTiltStar()
        else:
            errors += relion5_errors(self.tomogramsStar.get(), self.tomoParticlesStar.get())
        if self.isTiltSeries():
            errors += self._validateTiltOptions()
            if kind == INPUT_PARTICLES and self.inputParticles.get() is not None:
                first = self.inputParticles.get().getFirstItem()
                columns = [c for c in cryodrgn.TILT_COLUMNS if hasattr(first, "_" + c)]
                missing = self.missingTiltColumns(columns)
                if missing:
                    errors.append("%s: %s" % (describePointer(self.inputParticles), missing))
        return errors

    def _validateTiltStar(self):
        star = self.tiltStar.get()
        if not star or not os.path.isfile(star):
            return ["Tilt-series particle STAR: file %r not found." % star]
        try:
            with StarTable.open(star, "particles") as table:
                columns, has_optics = table.columns, table.has_optics
        except (FormatError, OSError) as exc:
            return ["Tilt-series particle STAR: %s" % exc]
        errors = [] if has_optics else ["%s has no data_optics table (pixel size, voltage)."
                                        % star]
        missing = [c for c in _STAR_NEEDED if c not in columns]
        if missing:
            errors.append("%s lacks %s: RECOVAR needs every tilt image's name, pose, defocus "
                          "and particle (rlnGroupName)." % (star, ", ".join(missing)))
        missing = self.missingTiltColumns(columns)
        return errors + (["%s: %s" % (star, missing)] if missing else [])

    def _validateTiltOptions(self):
        errors = []
        if self.tiltCtfChoice() == TILT_CTF_DOSE_SYMMETRIC:
            for param, label in (("dosePerTilt", "Dose per tilt"),
                                 ("anglePerTilt", "Angle per tilt")):
                if not self.getAttributeValue(param, 0) > 0:
                    errors.append("%s must be positive for the dose-symmetric tilt CTF model "
                                  "(RECOVAR computes each tilt's dose and angle from it)." % label)
        if self.nTilts.get() < 0:
            errors.append("Tilts per particle cannot be negative (0 uses all tilts).")
        return errors

    def missingTiltColumns(self, columns):
        """'' when ``columns`` hold what the chosen tilt CTF model reads, else what is missing
        and what to do."""
        columns = set(columns)
        if "rlnGroupName" not in columns:
            return ("tilt images without rlnGroupName: RECOVAR needs it to group the tilt images "
                    "of each particle.")
        missing = [(what, c) for what, c in _NEEDED[self.tiltCtfChoice()] if c not in columns]
        if not missing:
            return ""
        return ("tilt images without %s, which the '%s' tilt CTF model reads: RECOVAR cannot "
                "know their tilt and dose. Choose the model that matches the data (relion5: "
                "rlnMicrographPreExposure; warp: rlnCtfBfactor; both need rlnCtfScalefactor), "
                "or 'dose-symmetric' with 'Dose per tilt' and 'Angle per tilt'."
                % (" and ".join("%s (%s)" % m for m in missing),
                   TILT_CTF_CHOICES[self.tiltCtfChoice()]))

    def tiltMethods(self):
        if not self.isTiltSeries():
            return ""
        return ", cryo-ET tilt series with the %s tilt CTF" % TILT_CTF_CHOICES[self.tiltCtfChoice()]

    # --------------------------- UTILS functions ----------------------------
    def isTiltSeries(self):
        """Whether the input is tilt images (cryo-ET)."""
        return self.inputType.get() != INPUT_PARTICLES or bool(self.tiltSeries.get())

    def tiltCtfChoice(self):
        """The tilt CTF model (RELION 5 projects: always relion5)."""
        return (TILT_CTF_RELION5 if self.inputType.get() == INPUT_RELION5
                else self.tiltCtf.get())

    def tiltArguments(self):
        """RECOVAR's tilt-series options from the form (none for single particles)."""
        if not self.isTiltSeries():
            return []
        args = ["--tilt-series", "--tilt-series-ctf", TILT_CTF_MODES[self.tiltCtfChoice()]]
        if self.tiltCtfChoice() == TILT_CTF_DOSE_SYMMETRIC:
            args += ["--dose-per-tilt", self.dosePerTilt.get(),
                     "--angle-per-tilt", self.anglePerTilt.get()]
        if self.nTilts.get() > 0:
            args += ["--ntilts", self.nTilts.get()]
        if self.sharedContrast.get():
            args.append("--shared_contrast_across_tilts")
        return args

    def sourceParticles(self):
        """The particles the outputs copy: the input set, or the set read from the STAR."""
        if self.inputType.get() == INPUT_PARTICLES:
            return self.inputParticles.get()
        particles = emobj.SetOfParticles(filename=self._getExtraPath(rf.TiltSeries.PARTICLES_SQLITE))
        particles.loadAllProperties()
        return particles

    def memoryParticles(self):
        """The particles whose images RECOVAR will hold (for the memory estimate): the input
        set, or the set read from the STAR once converted; None before."""
        if self.inputType.get() == INPUT_PARTICLES:
            return self.inputParticles.get()
        if not os.path.exists(self._getExtraPath(rf.TiltSeries.PARTICLES_SQLITE)):
            return None
        return self.sourceParticles()
