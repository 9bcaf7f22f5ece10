"""RECOVAR protocols refuse bad input with clear errors and register nothing on failure.

Particles without CTF, without 3D alignment, with an odd box; masks of another box; more
latent dimensions than the particles allow; a run that cannot fit the machine's memory (the
machine's memory given by ``$SCIPION_RECIPROCAL_HOST_MEMORY_GB``); half sets of exactly
RECOVAR's minimum of particles per bin; a missing environment; bad latent points, clusters
and embeddings are caught by ``_validate`` (or, for the half sets of kernel regression,
worked around with a message). A real
RECOVAR run that runs out of memory (the environment's activation limits its address space
with ``ulimit -v``, so JAX fails with RESOURCE_EXHAUSTED) fails with RECOVAR's message, the
low-memory options to try and no output. Runs under pytest and with
``python -m scipion tests scipion_reciprocal.tests.test_protocols_recovar_inputs``.
"""
import os
import pickle
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import mrcfile
import numpy as np
from pwem.protocols import ProtImportVolumes
from pyworkflow.tests import BaseTest, setupTestProject

from scipion_reciprocal import Plugin
from scipion_reciprocal.constants import HOST_MEMORY_VAR
from scipion_reciprocal.core import recovar_memory as mem
from scipion_reciprocal.environments import BACKENDS
from scipion_reciprocal.formats import recovar_files as rf
from scipion_reciprocal.formats.recovar_provenance import read_provenance
from scipion_reciprocal.formats.star import read_particles_star, write_particles_star
from scipion_reciprocal.protocols import (ProtRecovarComputeState, ProtRecovarDensity,
                                          ProtRecovarExternalEmbedding, ProtRecovarPipeline,
                                          ProtRecovarTrajectory)
from scipion_reciprocal.simulate.molecule import molecule_maps
from scipion_reciprocal.simulate.particles import simulate_particles, write_particle_dataset
from scipion_reciprocal.workflows.wiring import connect, relion_particles_import

PIXEL, N_PARTICLES = 4.0, 40
#: Address-space limit (kB) under which the 24 px pipeline's covariance step cannot allocate.
OOM_ULIMIT_KB = 2500000


def _dataset(folder, box, n_particles=N_PARTICLES):
    maps = molecule_maps(n_states=1, box=box, pixel_size=PIXEL, seed=0)
    sim = simulate_particles(maps, n_particles=n_particles, pixel_size=PIXEL, snr=1.0, seed=1)
    return write_particle_dataset(folder, sim)


def _variant(star, name, drop):
    """A copy of ``star`` without the columns for which ``drop(column)`` is true."""
    table = read_particles_star(star)
    particles = table.particles.drop(columns=[c for c in table.particles if drop(c)])
    path = Path(star).with_name(name)
    write_particles_star(path, particles, table.optics)
    return path


class TestRecovarInputs(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        root = Path(tempfile.mkdtemp(prefix="reciprocal-recovar-inputs-"))
        star = _dataset(root / "even", 24)
        cls.good = cls._import(star, "particles 24 px")
        cls.noCtf = cls._import(_variant(star, "no_ctf.star", lambda c: "Defocus" in c
                                         or c == "rlnPhaseShift"), "particles without CTF")
        cls.noAlignment = cls._import(_variant(star, "no_angles.star", lambda c: "Angle" in c
                                               or "Origin" in c), "particles without angles")
        cls.odd = cls._import(_dataset(root / "odd", 25, 10), "particles 25 px")
        cls.twoHundred = cls._import(_dataset(root / "two_hundred", 16, 200), "200 particles")
        for box in (24, 32):
            path = root / ("mask%d.mrc" % box)
            with mrcfile.new(str(path)) as mrc:
                mrc.set_data(np.ones((box,) * 3, dtype=np.float32))
                mrc.voxel_size = PIXEL
        cls.masks = {}
        for box in (24, 32):
            prot = cls.newProtocol(ProtImportVolumes, filesPath=str(root),
                                   filesPattern="mask%d.mrc" % box, samplingRate=PIXEL)
            prot.setObjLabel("mask %d px" % box)
            cls.launchProtocol(prot)
            cls.masks[box] = prot

    @classmethod
    def _import(cls, star, label):
        prot = relion_particles_import(cls.proj, star, PIXEL)
        prot.setObjLabel(label)
        cls.launchProtocol(prot)
        return prot

    def _pipeline(self, particles, **kwargs):
        kwargs.setdefault("zdims", "2")
        prot = self.newProtocol(ProtRecovarPipeline, **kwargs)
        connect(prot.inputParticles, particles, "outputParticles")
        return prot

    def _assertError(self, prot, *fragments):
        errors = prot.validate()
        self.assertTrue(any(all(f in e for f in fragments) for e in errors),
                        "%s not in %s" % (fragments, errors))

    def test_particles_without_ctf_alignment_or_even_box_are_refused(self):
        self._assertError(self._pipeline(self.noCtf), "has no CTF information",
                          "particles without CTF")
        self._assertError(self._pipeline(self.noAlignment), "has no 3D projection alignment",
                          "particles without angles")
        self._assertError(self._pipeline(self.odd), "odd box size (25 px)", "particles 25 px")
        self.assertFalse(self.noCtf.outputParticles.hasCTF())
        self.assertFalse(self.noAlignment.outputParticles.hasAlignmentProj())

    def test_mask_of_another_box_is_refused(self):
        prot = self._pipeline(self.good, maskType=0)
        connect(prot.maskVolume, self.masks[32], "outputVolume")
        self._assertError(prot, "is 32 px but the particles are 24 px")
        connect(prot.maskVolume, self.masks[24], "outputVolume")
        self.assertFalse([e for e in prot.validate() if "px but the particles" in e])
        connect(prot.focusMask, self.masks[32], "outputVolume")
        self._assertError(prot, "The focus mask", "is 32 px")

    def test_bad_latent_dimensions_are_refused(self):
        self._assertError(self._pipeline(self.good, zdims="2,x"), "Latent dimensions",
                          "'2,x'")

    def test_more_latent_dimensions_than_particles_allow_are_refused(self):
        self._assertError(self._pipeline(self.good, zdims="2,40"), "Latent dimensions 2,40",
                          "needs more particles than the %d given" % N_PARTICLES)
        self.assertFalse([e for e in self._pipeline(self.good, zdims="2,39").validate()
                          if "Latent dimensions" in e])

    def _withHostMemory(self, gb, check):
        previous = os.environ.get(HOST_MEMORY_VAR)
        os.environ[HOST_MEMORY_VAR] = str(gb)
        try:
            return check()
        finally:
            if previous is None:
                os.environ.pop(HOST_MEMORY_VAR)
            else:
                os.environ[HOST_MEMORY_VAR] = previous

    def test_memory_warnings_name_the_option_that_makes_the_run_fit(self):
        prot = self._pipeline(self.good, maskType=2, useGpu=False)  # all on the host
        # A machine whose free memory lies between the estimates with and without RECOVAR's
        # very-low-memory option: only a low-memory option makes the run fit.
        request = prot.memoryRequest()
        needed = [mem.estimate(replace(request, memory=m), None, 2).host_gb
                  for m in ("normal", "very low")]
        host = round((needed[0] + needed[1]) / 2 / mem.SAFETY, 3)
        added = " ".join(mem.plan(request, None, host).added_flags())
        self.assertRegex(added, "^--(very-)?low-memory-option")
        warnings = self._withHostMemory(host, prot.warnings)
        self.assertTrue(any("Memory: about" in w and "(estimate)" in w and
                            "host %.1f GB free" % host in w for w in warnings), warnings)
        self.assertTrue(any("'Memory options: automatic' will add %s (" % added in w
                            for w in warnings), warnings)
        prot.memoryOption.set(1)  # normal: nothing added, the fitting options are named
        warnings = self._withHostMemory(host, prot.warnings)
        self.assertTrue(any("it fits with %s (" % added in w for w in warnings), warnings)
        self.assertFalse([w for w in self._withHostMemory(64, prot.warnings)
                          if "does not fit" in w])
        if shutil.which("nvidia-smi") is None:  # a GPU asked for on a machine without one
            prot.useGpu.set(True)
            self.assertTrue(any("nvidia-smi is not available here: GPU memory not compared"
                                in w for w in prot.warnings()), prot.warnings())

    def test_a_run_that_cannot_fit_is_refused_naming_what_to_change(self):
        prot = self._pipeline(self.good, maskType=2, useGpu=False)
        errors = self._withHostMemory(0.5, prot.validate)
        self.assertTrue(any("needs about" in e and "0.5 GB of free host memory (no GPU)" in e
                            and "Use a machine with more free memory" in e for e in errors),
                        errors)

    def test_half_sets_of_exactly_the_minimum_per_bin(self):
        # Kernel regression: the protocol lowers --n-min-particles by one and says so.
        state = self.newProtocol(ProtRecovarComputeState, nMinParticles=100)
        arguments = state.volumeArguments([100, 100])
        self.assertEqual(arguments[arguments.index("--n-min-particles") + 1], 99)
        self.assertEqual(state.volumeArguments([150, 150])[-1], 100)
        # External embedding has no --n-min-particles: 200 particles (RELION half sets of
        # 100) are refused before RECOVAR crashes with IndexError.
        prot = self.newProtocol(ProtRecovarExternalEmbedding, embeddingSource=0,
                                embeddingAttribute="_rlnRandomSubset", targetsSource=0,
                                nTargets=1)
        connect(prot.inputParticles, self.twoHundred, "outputParticles")
        self._assertError(prot, "half sets of 100 and 100 particles", "IndexError",
                          "200 particles")
        connect(prot.inputParticles, self.good, "outputParticles")
        self.assertFalse([e for e in prot.validate() if "IndexError" in e])

    def test_density_needs_enough_alphas_and_a_finished_pipeline(self):
        pipeline = self._pipeline(self.good)
        self.proj.saveProtocol(pipeline)
        density = self.newProtocol(ProtRecovarDensity, alphas="1e-1 1e-3 1e-5")
        density.inputPipeline.set(pipeline)
        self._assertError(density, "at least 6 positive numbers", "'1e-1 1e-3 1e-5'")
        self._assertError(density, "has no outputs yet")

    def test_missing_environment_is_refused(self):
        backend = BACKENDS["recovar"]
        previous = Plugin.getVar(backend.activation_var)
        Plugin._vars[backend.activation_var] = "false"
        try:
            self._assertError(self._pipeline(self.good), "installb recovar")
        finally:
            Plugin._vars[backend.activation_var] = previous

    def test_trajectory_without_a_finished_pipeline_is_refused(self):
        pipeline = self._pipeline(self.good)
        self.proj.saveProtocol(pipeline)
        trajectory = self.newProtocol(ProtRecovarTrajectory, zdim=2, endpointsSource=1,
                                      startPoint="0,0", endPoint="1")
        trajectory.inputPipeline.set(pipeline)
        self._assertError(trajectory, "has no outputs yet")

    def test_external_embedding_must_match_the_particles(self):
        prot = self.newProtocol(ProtRecovarExternalEmbedding, embeddingSource=0,
                                embeddingAttribute="_cryodrgnZValues")
        connect(prot.inputParticles, self.good, "outputParticles")
        self._assertError(prot, "have no attribute '_cryodrgnZValues'")
        path = os.path.join(tempfile.mkdtemp(), "z.pkl")
        with open(path, "wb") as handle:
            pickle.dump(np.zeros((N_PARTICLES - 1, 8), dtype=np.float32), handle)
        prot = self.newProtocol(ProtRecovarExternalEmbedding, embeddingSource=1,
                                embeddingFile=path)
        connect(prot.inputParticles, self.good, "outputParticles")
        self._assertError(prot, path, "(39, 8)", "expected (%d, d)" % N_PARTICLES)

    def test_out_of_memory_fails_with_the_low_memory_options_and_no_output(self):
        if Plugin.validateBackend("recovar"):
            self.skipTest(Plugin.validateBackend("recovar")[0])
        backend = BACKENDS["recovar"]
        previous = Plugin.getVar(backend.activation_var)
        previousEnv = os.environ.get(backend.activation_var)
        limited = "ulimit -v %d && %s" % (OOM_ULIMIT_KB, Plugin.getActivation("recovar"))
        Plugin._vars[backend.activation_var] = limited
        os.environ[backend.activation_var] = limited  # the protocol process reads it too
        try:
            # Memory options 'normal': the plugin adds nothing (it cannot see the ulimit).
            prot = self._pipeline(self.good, maskType=2, uninvertData=1, memoryOption=1,
                                  extraParams="--gpu-budget-gb 8")
            with self.assertRaises(Exception):
                self.launchProtocol(prot)
        finally:
            Plugin._vars[backend.activation_var] = previous
            if previousEnv is None:
                os.environ.pop(backend.activation_var, None)
            else:
                os.environ[backend.activation_var] = previousEnv
        prot = self.proj.getProtocol(prot.getObjId())
        self.assertTrue(prot.isFailed())
        message = prot.getErrorMessage()
        # JAX either raises RESOURCE_EXHAUSTED or the process dies while allocating.
        self.assertRegex(message, "ran out of memory|did not finish .*killed")
        self.assertIn("--low-memory-option", message)
        self.assertIn("last lines of run.log", message)
        for name in ProtRecovarPipeline._possibleOutputs:
            self.assertFalse(hasattr(prot, name), name)
        # The failed run's provenance is kept (what ran, with which versions).
        run, = read_provenance(prot._getExtraPath(rf.PROVENANCE))["runs"]
        self.assertEqual(run["command"], "pipeline")
        self.assertNotEqual(run["status"], "completed")
