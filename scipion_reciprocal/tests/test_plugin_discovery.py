"""Scipion discovers the plugin: `python -m scipion protocols` lists every protocol."""
import os
import subprocess
import sys

import pwem

import scipion_reciprocal.protocols as protocols


def test_scipion_lists_every_protocol():
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    result = subprocess.run([sys.executable, "-m", "scipion", "protocols"], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    listed = {line.split()[1] for line in result.stdout.splitlines()
              if line.startswith("scipion_reciprocal")}
    expected = {name for name in dir(protocols) if name.startswith("Prot")}
    assert expected and expected <= listed, expected - listed


def test_domain_registers_plugin_objects_and_viewers():
    domain = pwem.Domain
    assert "ParticleClassifierModel" in domain.getObjects()
    viewers = {v.__name__ for v in domain.getViewers().values()}
    assert {"ReciprocalAnalysisViewer", "MapClusteringViewer"} <= viewers
