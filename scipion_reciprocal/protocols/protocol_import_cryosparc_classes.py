"""Import cryoSPARC classifications (heterogeneous refinement, 3D and 2D classification) as
Scipion sets of classes."""
import json
import os
import re

import numpy as np
import pwem.objects as emobj
from pwem.protocols import EMProtocol
from pyworkflow.protocol import params

from ..convert.particles import star_rows_to_particles
from ..core.class_summary import class_map_table, class_sizes, confidence_histogram
from ..core.cryosparc_relion import (CLASS_OFFSET, LOCATION_FIELDS, hard_classes,
                                     relion_particles, y_from_bottom)
from ..formats.cryosparc import CsParticles
from ..formats.cryosparc_jobs import cs_file_name, find_cs_jobs, job_of_file, open_cs_file
from ..formats.errors import FormatError
from ..formats.result_folder import ResultFolder
from ..plotting.classes import save_class_summary
from .protocol_import_relion_classes import OUTPUT_CLASSES, OUTPUT_PARTICLES

JOBS_FILE = "cryosparc_jobs.json"
SOURCES = ["cryoSPARC project folder and jobs", ".cs files"]
FROM_PROJECT, FROM_FILES = range(2)
Y_AXES = ["by micrograph (auto)", "from the bottom (flip)", "from the top (as stored)"]
Y_AUTO, Y_FLIP, Y_KEEP = range(3)


def cryosparc_files(pointer):
    """The particle files of an output of :class:`ProtImportCryosparcClassifications` that
    a pointer names: ``{"main", "passthrough", "project"}``, else None."""
    source, extended = pointer.getObjValue(), pointer.getExtended() or ""
    if not isinstance(source, ProtImportCryosparcClassifications) \
            or not extended.startswith(OUTPUT_CLASSES):
        return None
    path = source._getExtraPath(JOBS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        jobs = {job["name"]: job for job in json.load(handle)}
    return jobs.get(extended[len(OUTPUT_CLASSES):])


def cryosparc_rows(files, row_ids):
    """(CsParticles, None) when the items of an imported set, by id, are still the rows of
    its .cs files (ids 1..N in file order, as the import appended them), else (None, why)."""
    particles = CsParticles(files["main"], files["passthrough"], project_dir=files["project"])
    row_ids = np.asarray(row_ids)
    if len(row_ids) != len(particles) or not np.array_equal(
            row_ids, np.arange(1, len(particles) + 1)):
        return None, "%d items for the %d rows of %s" % (len(row_ids), len(particles),
                                                           particles.path)
    return particles, None


class ProtImportCryosparcClassifications(EMProtocol):
    """Imports the final particles of cryoSPARC classification jobs (heterogeneous
    refinement, 3D classification, 2D classification), from a cryoSPARC project folder by
    job or from .cs files. Each becomes a set of classes with its particles' CTF, alignment,
    acquisition and coordinates (micrograph, position in RELION's convention) in Scipion's
    conventions, and the job's class volumes (or 2D class averages) as representatives.
    Classes are numbered from 1: cryoSPARC's class + 1. Class sizes, posterior histograms and
    class maps are drawn for the viewer."""
    _label = "import cryoSPARC classifications"
    _possibleOutputs = {OUTPUT_CLASSES + "JNN": emobj.SetOfClasses3D,
                        OUTPUT_PARTICLES + "JNN": emobj.SetOfParticles}

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("importFrom", params.EnumParam, choices=SOURCES, default=FROM_PROJECT,
                      label="Import from",
                      help="A cryoSPARC project folder and the numbers of its classification "
                           "jobs (the job folders are read: job.json names the files of the "
                           "final particles), or particle .cs files (exported, or copied "
                           "out of a project).")
        form.addParam("cryosparcDir", params.PathParam, label="cryoSPARC project folder",
                      help="The project folder (P12, or where it was exported/copied): it "
                           "holds one folder per job (J30, ...). The particles' stacks "
                           "(blob/path, e.g. J19/extract/...) are relative to it. With .cs "
                           "files it may stay empty when the files are in their job folders.")
        form.addParam("jobs", params.StringParam, label="Jobs",
                      condition="importFrom == %d" % FROM_PROJECT,
                      help="Heterogeneous refinement, 3D classification or 2D classification "
                           "jobs: J30,J31 or '30 31'. The order is that of the Sankey diagram "
                           "of the reciprocal analysis. The job's final particles are read: "
                           "its particles_all_classes output (3D) or particles output (2D), "
                           "the last iteration's J30_NNNNN_particles.cs joined with its "
                           "passthrough file by uid.")
        form.addParam("csFiles", params.StringParam, label="Particle .cs files",
                      condition="importFrom == %d" % FROM_FILES,
                      help="One or more .cs files with classes (alignments3D/class or "
                           "alignments2D/class), separated by spaces or commas. A job's main "
                           "file (J30_00020_particles.cs) in its job folder is joined with "
                           "the job's passthrough file (stacks, CTF, positions); any other "
                           "file is read alone and must have blob/path, blob/idx and CTF.")
        form.addParam("yAxis", params.EnumParam, choices=Y_AXES, default=Y_AUTO,
                      expertLevel=params.LEVEL_ADVANCED,
                      label="Particle Y positions measured",
                      help="How cryoSPARC's location/center_y_frac becomes RELION's "
                           "rlnCoordinateY (the particle's Coordinate in Scipion). cryoSPARC "
                           "measures Y from the bottom for particles on micrographs it did "
                           "not motion-correct (imported from RELION, MotionCor2...), so "
                           "Y = (1 - frac) x height; its own motion correction (Patch or "
                           "Full-frame Motion: J5/motioncorrected/..._patch_aligned_"
                           "doseweighted.mrc) flips the micrographs, so positions picked on "
                           "them match other programs' micrographs unflipped. 'auto' decides "
                           "per micrograph by its name; choose a fixed way when your "
                           "micrographs were renamed. Matching by micrograph + coordinates "
                           "in the reciprocal analysis needs this right.")

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.findJobsStep, needsGPU=False)
        for name in self._describe():
            self._insertFunctionStep(self.createOutputStep, name, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def findJobsStep(self):
        """Describe every job (cryosparc_jobs.json) and write its class sizes, posterior
        histograms and class maps as tables and plots (what the viewer shows), in the extra
        folder: emptied first, sealed with its manifest at the end."""
        described = list(self._describe().values())
        with ResultFolder(self._getExtraPath(), clean=True,
                          producer="scipion-reciprocal %s" % self._label) as out:
            for job in described:
                self.info("%s: %s, %s%s" % (job["name"], job["type"] or "classification",
                                            job["main"], "".join(" + " + p for p in
                                                                 job["passthrough"])))
                self._writeSummary(out, job)
            out.write_json(JOBS_FILE, described)

    def createOutputStep(self, name):
        job = {j["name"]: j for j in self._readJobs()}[name]
        particles = CsParticles(job["main"], job["passthrough"], project_dir=job["project"])
        hard = hard_classes(particles)
        flip = {Y_AUTO: None, Y_FLIP: True, Y_KEEP: False}[self.yAxis.get()]
        table, optics = relion_particles(particles, job["project"], flip_y=flip)
        self._logYAxis(name, particles, flip)
        pixelSize = float(optics["rlnImagePixelSize"].iloc[0])
        outParticles = self._createSetOfParticles(suffix="_" + name)
        star_rows_to_particles(table, optics, outParticles, pixelSize, job["project"] or ".")
        outParticles.setObjLabel(name)
        create = self._createSetOfClasses2D if hard.kind == "2D" else self._createSetOfClasses3D
        classes = create(outParticles, suffix="_" + name)
        maps = {int(k): v for k, v in job["maps"].items()}
        classes.classifyItems(updateClassCallback=lambda cls: self._setRepresentative(
            cls, maps, hard.kind, pixelSize))
        classes.setObjLabel(name)
        self._defineOutputs(**{OUTPUT_PARTICLES + name: outParticles,
                               OUTPUT_CLASSES + name: classes})
        self.info("%s: %d particles in %d classes (%s + %d)" % (
            name, outParticles.getSize(), classes.getSize(), hard.field, CLASS_OFFSET))

    def _writeSummary(self, out, job):
        """Class sizes, posterior histograms and class maps of one job, tables and plots."""
        hard = hard_classes(CsParticles(job["main"]))
        maps = {int(k): v for k, v in job["maps"].items()}
        ids = np.arange(1, (hard.n_classes or 0) + 1)
        sizes = class_sizes(hard.classes, np.union1d(ids, list(maps)), hard.confidence)
        histogram = None if hard.confidence is None else confidence_histogram(
            hard.classes, hard.confidence, class_ids=sizes["class"])
        save_class_summary(out, job["name"], sizes, histogram, class_map_table(maps, sizes))

    def _logYAxis(self, name, particles, flip):
        if not all(field in particles for field in LOCATION_FIELDS):
            self.info("%s: no particle positions (location/*): no coordinates" % name)
            return
        if flip is None:
            flip = y_from_bottom(particles.column("location/micrograph_path"))
        flipped = int(np.sum(np.broadcast_to(flip, (len(particles),))))
        self.info("%s: particle Y measured from the bottom (flipped) for %d particles, from "
                  "the top for %d (%s)" % (name, flipped, len(particles) - flipped,
                                           Y_AXES[self.yAxis.get()]))

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        folder = self.cryosparcDir.get()
        if self.importFrom.get() == FROM_PROJECT and (not folder or not os.path.isdir(folder)):
            return ["cryoSPARC project folder %r not found." % folder]
        if self.importFrom.get() == FROM_FILES and not self._csFiles():
            return ["Give at least one particle .cs file."]
        try:
            for job in self._describe().values():
                hard_classes(CsParticles(job["main"]))
        except (FormatError, ValueError) as error:
            return [str(error)]
        return []

    def _summary(self):
        lines = []
        for name, output in self.iterOutputAttributes():
            if name.startswith(OUTPUT_CLASSES):
                lines.append("%s: %d particles in %d classes" % (
                    output.getObjLabel(), output.getImages().getSize(), output.getSize()))
        if lines:
            lines.append("Classes numbered from 1 (cryoSPARC's class + %d)." % CLASS_OFFSET)
            return lines
        return ["Jobs %s of %s." % (self.jobs.get(), self.cryosparcDir.get())
                if self.importFrom.get() == FROM_PROJECT else "Files %s." % self.csFiles.get()]

    def _methods(self):
        what = ("jobs %s of the cryoSPARC project %s" % (self.jobs.get(), self.cryosparcDir.get())
                if self.importFrom.get() == FROM_PROJECT else "files %s" % self.csFiles.get())
        return ["Classifications made in cryoSPARC [Punjani2017cryosparc] (%s) were imported; "
                "poses (rotation vectors) were converted to Euler angles and shifts to "
                "Angstrom in RELION's conventions, classes renumbered from 1." % what]

    def _citations(self):
        return ["Punjani2017cryosparc"]

    # --------------------------- UTILS functions ----------------------------
    def _csFiles(self):
        return [t for t in re.split(r"[,\s]+", self.csFiles.get() or "") if t]

    def _describe(self):
        """Output name -> what to import (files, project folder, job type, class maps), in
        the order given."""
        folder = self.cryosparcDir.get()
        project = os.path.abspath(folder) if folder else None
        if self.importFrom.get() == FROM_PROJECT:
            jobs = [(job.uid, job) for job in find_cs_jobs(project, self.jobs.get() or "")]
        else:
            jobs = [(cs_file_name(path), job_of_file(path) or open_cs_file(path))
                    for path in self._csFiles()]
        described, used = {}, set()
        for name, job in jobs:
            name = re.sub(r"\W", "_", name)
            base, n = name, 2
            while name in used:
                name, n = "%s_%d" % (base, n), n + 1
            used.add(name)
            described[name] = _describeJob(name, job, project)
        return described

    def _readJobs(self):
        with open(self._getExtraPath(JOBS_FILE)) as handle:
            return json.load(handle)

    @staticmethod
    def _setRepresentative(cls, maps, kind, pixelSize):
        if cls.getObjId() not in maps:
            return
        path, index = maps[cls.getObjId()]
        image = emobj.Volume() if kind == "3D" else emobj.Particle()
        image.setLocation(emobj.NO_INDEX if index is None else int(index) + 1, path)
        image.setSamplingRate(pixelSize)
        cls.setRepresentative(image)


def _describeJob(name, job, project):
    """A JSON-able description of a job (CsJob) or a lone file (CsParticles)."""
    if isinstance(job, CsParticles):
        return {"name": name, "type": "", "main": str(job.path), "passthrough": [],
                "project": str(job.project_dir or project or os.path.dirname(job.path)),
                "maps": {}}
    maps = {str(k): [str(p), None if i is None else int(i)]
            for k, (p, i) in job.class_maps().items()}
    return {"name": name, "type": job.job_type, "main": str(job.particles),
            "passthrough": [str(p) for p in job.passthrough], "project": str(job.project_dir),
            "maps": maps}
