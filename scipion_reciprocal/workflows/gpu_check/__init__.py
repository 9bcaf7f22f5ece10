"""The one-command GPU check (``scripts/gpu-check.sh``): the plugin's GPU paths at real size.

It simulates data with known truth, runs RECOVAR (pipeline, analyze) and the particle
classifier (train, classify, pick), and reports per phase the wall time and the peak GPU
memory, and the correctness figures: mean vs truth, k-means ARI, classifier recall and
precision, picks vs true coordinates. Two drivers share the data, the figures and the report:

- :mod:`.with_scipion`: a Scipion project like the demo's, every step through the protocols
  (a GPU machine with network access and the CUDA builds of the backend environments);
- :mod:`.offline`: no Scipion, the same RECOVAR commands the protocols run, on a machine's own
  JAX (a GPU machine without network access; see :mod:`.wheels`).

Nothing here runs in CI on a GPU; ``--allow-cpu --tiny`` proves the logic on a CPU.
"""
