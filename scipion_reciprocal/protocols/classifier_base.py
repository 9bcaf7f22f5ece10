"""What the particle-classifier protocols share: the backend program, input tables and the
result folder (the protocol's extra folder: emptied by the first step, sealed with a manifest
by the last, so that a rerun starts clean and a viewer knows an unfinished run)."""
import os
import shutil
from pathlib import Path

import numpy as np
from pyworkflow.protocol import params

from ..convert.set_sql import read_set_items
from ..core.picking import write_particle_table
from ..formats._atomic import is_temporary
from ..formats.result_folder import ResultFolder
from .backend_base import ProtBackend

PROGRAM = ("classifier", "particle_classifier.py")
PARTICLES_CSV = "particles.csv"   # the backend's input table (extra folder)
PLOTS_DIR = "plots"               # figures of the train / classify / pick protocols


class ProtClassifierBase(ProtBackend):
    """Base of the train / classify / pick protocols (TensorFlow backend)."""
    _backendName = "classifier"

    def _defineThreadsParam(self, form):
        form.addParallelSection(threads=2, mpi=0)

    def runClassifier(self, subcommand, arguments):
        """Run the backend's ``subcommand`` with the protocol's threads and GPUs."""
        self.runBackend(self.backendProgram(*PROGRAM),
                        "%s %s --threads %d" % (subcommand, arguments, self.numberOfThreads.get()))

    def resultFolder(self, first=False, last=False):
        """The extra folder as a ResultFolder: the ``first`` step empties it, the others go on
        with it, the ``last`` one writes its manifest when its block ends."""
        return ResultFolder(self._getExtraPath(), clean=first, resume=not first, seal=last,
                            producer="scipion-reciprocal %s" % self._label)

    def runClassifierInto(self, folder, subcommand, arguments):
        """Run the backend, which writes ``folder`` (relative to the extra folder; emptied
        first: a rerun keeps nothing of an earlier try), and record what it wrote there."""
        shutil.rmtree(self._getExtraPath(folder), ignore_errors=True)
        with self.resultFolder() as out:
            self.runClassifier(subcommand, arguments)
            for path in sorted(Path(out.path(folder)).rglob("*")):
                if path.is_file() and not is_temporary(path):
                    out.add(path)

    def writeParticleTable(self, path, particleSets, labels=None):
        """The backend's CSV (stack, index, [label,] pixel_size) for one or more sets, read
        from their SQLite files; returns the Scipion ids in table order."""
        stacks, indices, pixels, allLabels, ids = [], [], [], [], []
        for i, particles in enumerate(particleSets):
            items = read_set_items(particles.getFileName(), ["_index", "_filename"])
            stacks += [os.path.abspath(f) for f in items["_filename"]]
            indices.append(np.maximum(items["_index"].fillna(1).astype(int).to_numpy(), 1))
            pixels.append(np.full(len(items), particles.getSamplingRate()))
            ids.append(items["id"].to_numpy())
            if labels is not None:
                allLabels.append(np.full(len(items), labels[i]))
        write_particle_table(path, stacks, np.concatenate(indices), np.concatenate(pixels),
                             None if labels is None else np.concatenate(allLabels))
        return np.concatenate(ids)

    @staticmethod
    def emptySetErrors(pointers):
        """Errors for empty or unsampled particle sets (``pointers``: label -> pointer)."""
        errors = []
        for label, pointer in pointers.items():
            particles = pointer.get()
            if particles is None:
                continue
            if particles.getSize() == 0:
                errors.append("%s is empty." % label)
            elif not particles.getSamplingRate():
                errors.append("%s has no pixel size." % label)
        return errors


def addModelParam(form):
    form.addParam("inputModel", params.PointerParam, pointerClass="ParticleClassifierModel",
                  label="Trained classifier",
                  help="A model made by 'train particle classifier'. Inputs of another pixel "
                       "size are resampled to the model's pixel size (the log says so).")
