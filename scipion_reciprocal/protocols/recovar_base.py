"""What the RECOVAR protocols share: conversion of the particles, checks and the command runner.

RECOVAR 1.0.5 runs in its own environment (``environments.RECOVAR``) as
``python -m recovar.commands.<command>``; every command writes ``job.json`` and ``run.log`` in
its output folder, which :func:`formats.recovar_results.check_job` reads to report failures.
"""
import os

import numpy as np
import pwem.objects as emobj
from pyworkflow.object import CsvList
from pyworkflow.protocol import params

from ..convert.particles import (ConversionError, missing_3d_alignment_error,
                                 missing_ctf_error, particles_table)
from ..convert.set_subsets import add_item_attributes, write_item_subset
from ..environments import cuda_available
from ..formats import cryodrgn
from ..formats.chimerax import write_volume_series
from ..formats import recovar_results as rr
from ..formats.relion import merge_optics
from .backend_base import ProtBackend
from .inputs import describePointer

INPUTS_DIR = "inputs"          # poses.pkl, ctf.pkl, particles.star, id_map.csv, stacks/
PLOTS_DIR = "plots"
#: Commands that refuse to run on the CPU without --accept-cpu.
ACCEPT_CPU_COMMANDS = ("pipeline", "pipeline_with_outliers")


class RecovarStepError(RuntimeError):
    """A RECOVAR command failed; the message holds its log tail and what to try."""


class ProtRecovarBase(ProtBackend):
    """Base of the RECOVAR protocols (JAX backend, RECOVAR 1.0.5)."""
    _backendName = "recovar"

    # --------------------------- DEFINE param functions ---------------------
    def _defineExtraParams(self, form, default=""):
        form.addParam("extraParams", params.StringParam, default=default, expertLevel=params.LEVEL_ADVANCED,
                      label="Additional RECOVAR arguments",
                      help="Passed verbatim to the RECOVAR command (see `recovar <command> "
                           "--help` in its environment), e.g. `--gpu-budget-gb 8 --lazy`.")

    def _definePipelineParam(self, form):
        form.addParam("inputPipeline", params.PointerParam, pointerClass="ProtRecovarPipeline",
                      label="RECOVAR pipeline",
                      help="A finished 'recovar pipeline' run: its latent spaces, covariance and "
                           "particles are used.")

    def _defineVolumeParams(self, form):
        """Options of RECOVAR's kernel-regression volumes (analyze, states, trajectories)."""
        group = form.addGroup("Volumes", expertLevel=params.LEVEL_ADVANCED)
        group.addParam("bfactor", params.FloatParam, default=0, label="B-factor (A^2)",
                       help="Sharpening B-factor applied to the kernel-regression volumes "
                            "(RECOVAR --Bfactor); the consensus map's B-factor is a good guess.")
        group.addParam("nBins", params.IntParam, default=50, label="Kernel bins",
                       help="Number of kernel-regression bins (RECOVAR --n-bins): more bins "
                            "give finer heterogeneity, fewer average more particles and run "
                            "faster.")
        group.addParam("maskradFraction", params.FloatParam, default=20,
                       label="Local mask radius fraction",
                       help="Radius of the local masks of kernel regression = box / this value, "
                            "in px (RECOVAR --maskrad-fraction); 20 gives 6.4 px at 128 px.")

    def volumeArguments(self):
        """RECOVAR options for the kernel-regression volumes from the form."""
        return ["--Bfactor", self.bfactor.get(), "--n-bins", self.nBins.get(),
                "--maskrad-fraction", self.maskradFraction.get()]

    # --------------------------- STEPS functions ----------------------------
    def convertParticlesStep(self, particlesPointer):
        """Write RECOVAR's inputs (linked stacks, poses.pkl, ctf.pkl, id map) in extra/inputs."""
        particles = particlesPointer.get()
        try:
            table, optics = particles_table(particles)
        except ConversionError as exc:
            raise ConversionError("%s: %s" % (describePointer(particlesPointer), exc)) from None
        rows = merge_optics(table, optics)
        inputs = cryodrgn.write_recovar_inputs(
            rows, self._getExtraPath(INPUTS_DIR), particles.getSamplingRate(), particles.getXDim(),
            ids=table["scipionId"].to_numpy(np.int64), image_root=os.getcwd())
        self.info("Wrote RECOVAR inputs for %d particles (%d px, %.3f A/px) in %s"
                  % (inputs.n_particles, inputs.box, inputs.pixel_size, self._getExtraPath(INPUTS_DIR)))

    def runRecovar(self, command, arguments, outputDir, outputFlag="-o"):
        """Run ``recovar <command> <arguments> -o outputDir`` with the form's GPUs.

        ``outputFlag``: the command's output option (``--output_dir`` for the density).

        ``--accept-cpu`` is added to ``pipeline`` when no GPU is given or the machine has
        none (``environments.cuda_available``); then no GPU is made visible.  A failure raises
        :class:`RecovarStepError` with RECOVAR's log tail and the low-memory options.
        """
        gpus = self._visibleGpus() if cuda_available() else ""
        args = list(arguments) + [outputFlag, outputDir]
        if command in ACCEPT_CPU_COMMANDS and not gpus:
            args.append("--accept-cpu")
        extra = self.getAttributeValue("extraParams", "") or ""
        line = " ".join(str(a) for a in args) + ((" " + extra) if extra.strip() else "")
        self.info("recovar %s on %s" % (command, ("GPU(s) %s" % gpus) if gpus else "the CPU"))
        try:
            self.runBackend("-m recovar.commands.%s" % command, line, gpus=gpus)
        except Exception as exc:
            raise RecovarStepError(self._failureMessage(command, outputDir, exc)) from None
        rr.check_job(outputDir, command)

    def _failureMessage(self, command, outputDir, exc):
        """RECOVAR's own account (job status, log tail) plus what to try.

        Python tracebacks (e.g. JAX's RESOURCE_EXHAUSTED) go to the protocol's own logs, not
        to RECOVAR's run.log: the message leads with their out-of-memory line (and the
        low-memory options), or else with the exception that ended RECOVAR.
        """
        try:
            rr.check_job(outputDir, command)
        except rr.RecovarResultError as failed:
            message = str(failed)
        else:
            message = "RECOVAR %s failed (%s)" % (command, exc)
        logs = "".join(_tail(p, 60) for p in self.getLogPaths()[:2])
        oom = rr.memory_error_line(logs)
        error = None if oom else rr.exception_line(logs)
        if oom:
            message = "RECOVAR %s ran out of memory: %s\n%s" % (command, oom, message)
        elif error:
            message = "RECOVAR %s failed with %s\n%s" % (command, error, message)
        if not error and rr.LOW_MEMORY_HINT not in message:
            message += "\n%s." % rr.LOW_MEMORY_HINT
        return message

    # --------------------------- INFO functions -----------------------------
    def validateParticles(self, pointer):
        """Errors for particles RECOVAR cannot use (CTF, 3D alignment, even box, pixel size)."""
        particles = pointer.get()
        if particles is None:
            return ["Choose the input particles."]
        name = describePointer(pointer)
        errors = [e for e in (missing_ctf_error(particles, name),
                              missing_3d_alignment_error(particles, name)) if e]
        box = particles.getXDim() or 0
        if box % 2:
            errors.append("%s has an odd box size (%d px): RECOVAR needs an even box; re-extract "
                          "or resize the particles." % (name, box))
        if not particles.getSamplingRate():
            errors.append("%s has no pixel size." % name)
        return errors

    @staticmethod
    def validateMaskBox(maskPointer, particles, label):
        """Error when a mask volume's box differs from the particles' box."""
        mask = maskPointer.get()
        if mask is None or particles is None:
            return []
        if mask.getXDim() != particles.getXDim():
            return ["%s %s is %d px but the particles are %d px: resample the mask to the "
                    "particle box." % (label, describePointer(maskPointer), mask.getXDim(),
                                       particles.getXDim())]
        return []

    def validatePipeline(self, zdims=()):
        """Errors when the chosen pipeline run is missing, unfinished or lacks a zdim."""
        pipeline = self.getAttributeValue("inputPipeline")
        if pipeline is None:
            return ["Choose a 'recovar pipeline' run."]
        if not hasattr(pipeline, "outputParticles"):
            return ["The pipeline run '%s' has no outputs yet: let it finish first."
                    % pipeline.getObjLabel()]
        missing = [z for z in zdims if z not in pipeline.zdimList()]
        if missing:
            return ["zdim %s was not computed by the pipeline '%s' (it has %s)."
                    % (",".join(map(str, missing)), pipeline.getObjLabel(), pipeline.zdims.get())]
        return []

    # --------------------------- UTILS functions ----------------------------
    def pipelineRun(self):
        """The input 'recovar pipeline' protocol."""
        return self.inputPipeline.get()

    def kernelVolumeSet(self, folder, prefix, suffix, label):
        """A SetOfVolumes of the kernel-regression volumes ``<prefix>NNN.mrc`` in ``folder``.

        Each volume keeps its half maps and its latent point (``_recovar_latent``); ``label``
        is formatted with the volume's index. Returns None when RECOVAR wrote none.
        """
        from ..formats.mrc import read_map
        found = rr.kernel_volumes(folder, prefix)
        if not found.volumes:
            return None
        _, voxel = read_map(found.volumes[0])
        volumes = self._createSetOfVolumes(suffix)
        volumes.setSamplingRate(voxel)
        for i, path in enumerate(found.volumes):
            volume = emobj.Volume(location=str(path))
            volume.setSamplingRate(voxel)
            volume.setHalfMaps([str(found.half1[i]), str(found.half2[i])])
            volume.setObjLabel(label % i)
            if found.latent_points.shape[1]:
                point = CsvList(pType=float)
                point.set(["%.6g" % v for v in found.latent_points[i]])
                volume._recovar_latent = point
            volumes.append(volume)
        return volumes

    def saveChimeraxSeries(self, volumes, fileName, title):
        """Write a ChimeraX command file (in extra) that opens ``volumes`` as a series."""
        write_volume_series(self._getExtraPath(fileName),
                            [os.path.abspath(v.getFileName()) for v in volumes], title=title)

    def registerOutputs(self, outputs, source):
        """Define every output (one at a time: Scipion stores each before the next)."""
        for name, output in outputs.items():
            if output is None:
                continue
            self._defineOutputs(**{name: output})
            self._defineSourceRelation(source, output)

    def particleSubset(self, source, ids, suffix, attributes=None):
        """A SetOfParticles of the items of ``source`` with ``ids`` (an SQL copy of their rows,
        so every attribute is kept), saved as ``particles<suffix>.sqlite``; ``attributes``
        adds per-item values (see :func:`add_item_attributes`)."""
        target = self._getPath("particles%s.sqlite" % suffix)
        if os.path.exists(target):
            os.remove(target)  # a resumed step rewrites it
        ids = np.asarray(ids, dtype=np.int64)
        write_item_subset(source.getFileName(), target, ids)
        if attributes:
            add_item_attributes(target, ids, attributes)
        particles = emobj.SetOfParticles(filename=target)
        particles.copyInfo(source)
        particles.write()
        return particles

    def idMap(self):
        """Scipion particle id of every RECOVAR row."""
        return cryodrgn.read_id_map(self._getExtraPath(INPUTS_DIR, cryodrgn.ID_MAP_CSV))

    def inputFile(self, name):
        return self._getExtraPath(INPUTS_DIR, name)

    def plotPath(self, name):
        folder = self._getExtraPath(PLOTS_DIR)
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, name)


def savefig(fig, path):
    import matplotlib.pyplot as plt
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _tail(path, lines):
    """The last ``lines`` lines of a text file ('' when it cannot be read)."""
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except (OSError, TypeError):
        return ""
