"""Import RELION Class3D/Class2D jobs as Scipion sets of classes."""
import json
import os
from enum import Enum

import pwem.objects as emobj
from pwem.protocols import EMProtocol
from pyworkflow.protocol import params

from ..convert.particles import star_rows_to_particles
from ..core.relion_jobs import (RelionJobError, class_maps, find_iteration_file, job_kind,
                                read_job_history, resolve_jobs)
from ..formats.errors import FormatError
from ..formats.result_folder import ResultFolder
from ..formats.star import read_particles_star
from ..plotting.reciprocal import (CONVERGENCE_PNG, SLICES_PNG, class_slices_figure,
                                   convergence_figure)

JOBS_FILE = "jobs.json"
PLOTS_DIR = "plots"
#: Outputs of a job: these prefixes + the job's name (outputClasses_job085); the cryoSPARC
#: import names its outputs the same way.
OUTPUT_CLASSES, OUTPUT_PARTICLES = "outputClasses_", "outputParticles_"


class ImportOutputs(Enum):
    """What each imported job gives (names: the prefixes above + the job's name)."""
    outputClasses_jobNNN = emobj.SetOfClasses3D
    outputParticles_jobNNN = emobj.SetOfParticles


def historyFile(jobName):
    return "history_%s.csv" % jobName


def classMapsFile(jobName):
    return "class_maps_%s.csv" % jobName


class ProtImportRelionClassifications(EMProtocol):
    """Imports the last (or a chosen) iteration of RELION 3D or 2D classification jobs.
    Each job becomes a set of classes holding its particles, with CTF, alignment and optics
    as RELION wrote them, and the job's class maps (or 2D class averages) as
    representatives. The per-iteration history (class changes, class distribution,
    resolution) is kept for the convergence plots of the reciprocal analysis viewer."""
    _label = "import RELION classifications"
    _possibleOutputs = ImportOutputs

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("relionDir", params.PathParam, label="RELION project folder",
                      help="The folder RELION runs in (it holds Class3D/, Class2D/, "
                           "Extract/...). Image paths in the STAR files are relative to it.")
        form.addParam("jobs", params.StringParam, label="Jobs",
                      help="Classification jobs: numbers (85,86,87 or '85 86 87', looked up "
                           "as job085... in every job-type folder) or job paths "
                           "(Class3D/job085, Class2D/job013). Order matters: it is the order "
                           "of the Sankey diagram of the reciprocal analysis.")
        form.addParam("iteration", params.IntParam, default=-1, label="Iteration",
                      help="Iteration to import from every job; -1 takes each job's last "
                           "iteration (continued runs, run_ctNNN_itMMM, count by iteration).")

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.findJobsStep, needsGPU=False)
        for job in self._resolveJobs():
            self._insertFunctionStep(self.createOutputStep, job.name, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def findJobsStep(self):
        """Describe every job (jobs.json), keep its history and class maps and draw its
        plots, in the extra folder: emptied first, sealed with its manifest at the end."""
        described = []
        with ResultFolder(self._getExtraPath(), clean=True,
                          producer="scipion-reciprocal %s" % self._label) as out:
            for jobDir in self._resolveJobs():
                dataStar = find_iteration_file(jobDir, self._iteration())
                kind = job_kind(jobDir)
                maps = class_maps(jobDir, self._iterationOf(dataStar),
                                  project_dir=self._relionDir())
                out.write_csv(classMapsFile(jobDir.name), maps, index=False)
                history = read_job_history(jobDir)
                out.write_csv(historyFile(jobDir.name), history, index=False)
                self._savePlots(out, jobDir.name, history, maps)
                described.append({"job": jobDir.name, "folder": str(jobDir),
                                  "data": str(dataStar), "kind": kind})
                self.info("%s: %s classification, %s" % (jobDir.name, kind, dataStar.name))
            out.write_json(JOBS_FILE, described)

    def createOutputStep(self, jobName):
        job = {j["job"]: j for j in self._readJobs()}[jobName]
        table = read_particles_star(job["data"])
        optics = table.optics
        pixelSize = float((optics if optics is not None else table.particles)
                          ["rlnImagePixelSize"].iloc[0])
        particles = self._createSetOfParticles(suffix="_" + jobName)
        star_rows_to_particles(table.particles, optics, particles, pixelSize, self._relionDir())
        particles.setObjLabel(jobName)

        create = self._createSetOfClasses3D if job["kind"] == "3D" else self._createSetOfClasses2D
        classes = create(particles, suffix="_" + jobName)
        maps = self._classMaps(jobName)
        classes.classifyItems(updateClassCallback=lambda cls: self._setRepresentative(
            cls, maps, job["kind"], pixelSize))
        classes.setObjLabel(jobName)
        self._defineOutputs(**{OUTPUT_PARTICLES + jobName: particles,
                               OUTPUT_CLASSES + jobName: classes})
        self.info("%s: %d particles in %d classes" % (jobName, particles.getSize(), classes.getSize()))

    def _savePlots(self, out, jobName, history, maps):
        if len(history):
            out.save_figure("%s/%s" % (PLOTS_DIR, CONVERGENCE_PNG.format(job=jobName)),
                            convergence_figure(history, jobName), dpi=100)
        if maps["exists"].any():
            out.save_figure("%s/%s" % (PLOTS_DIR, SLICES_PNG.format(job=jobName)),
                            class_slices_figure(maps, jobName), dpi=100)

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = []
        if not self.relionDir.get() or not os.path.isdir(self._relionDir()):
            return ["RELION project folder %r not found." % self.relionDir.get()]
        try:
            for jobDir in self._resolveJobs():
                find_iteration_file(jobDir, self._iteration())
        except (RelionJobError, FormatError) as error:
            errors.append(str(error))
        return errors

    def _summary(self):
        summary = []
        for name, output in self.iterOutputAttributes():
            if name.startswith(OUTPUT_CLASSES):
                summary.append("%s: %d particles in %d classes"
                               % (output.getObjLabel(), output.getImages().getSize(), output.getSize()))
        return summary or ["Jobs %s of %s." % (self.jobs.get(), self.relionDir.get())]

    def _methods(self):
        return ["Classifications %s were imported from the RELION project %s."
                % (self.jobs.get(), self.relionDir.get())]

    def _citations(self):
        return ["Scheres2012relion"]

    # --------------------------- UTILS functions ----------------------------
    def _relionDir(self):
        return os.path.abspath(self.relionDir.get())

    def _iteration(self):
        return None if self.iteration.get() is None or self.iteration.get() < 0 else self.iteration.get()

    @staticmethod
    def _iterationOf(dataStar):
        return int(dataStar.name.split("_it")[-1].split("_")[0])

    def _resolveJobs(self):
        return resolve_jobs(self.jobs.get() or "", project_dir=self._relionDir())

    def _readJobs(self):
        with open(self._getExtraPath(JOBS_FILE)) as handle:
            return json.load(handle)

    def _classMaps(self, jobName):
        import pandas as pd
        return pd.read_csv(self._getExtraPath(classMapsFile(jobName))).set_index("class")

    @staticmethod
    def _setRepresentative(cls, maps, kind, pixelSize):
        classId = cls.getObjId()
        if classId not in maps.index or not maps.loc[classId, "exists"]:
            return
        row = maps.loc[classId]
        image = emobj.Volume() if kind == "3D" else emobj.Particle()
        image.setLocation(int(row["index"]) if kind == "2D" else emobj.NO_INDEX, str(row["path"]))
        image.setSamplingRate(pixelSize)
        cls.setRepresentative(image)
