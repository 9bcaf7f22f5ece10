"""Names shared by the plugin, its protocols and its command line."""

PLUGIN_NAME = "scipion_reciprocal"
PLUGIN_URL = "https://github.com/scipion-reciprocal/scipion-reciprocal"

#: Section of the protocol tree (see protocols.conf).
PROTOCOL_TREE_SECTION = "Reciprocal"

#: Environment variable that forces (1) or forbids (0) CUDA builds of the backends.
CUDA_OVERRIDE_VAR = "SCIPION_RECIPROCAL_CUDA"

#: File written last by a backend install; its presence means the environment is complete.
BACKEND_MARKER = ".scipion-reciprocal-installed"

#: Free memory (GB) the RECOVAR protocols plan against instead of this machine's: set them
#: where the form is filled on one machine and the job runs on another (a cluster's submit
#: host and its nodes). Host memory, and the memory of each GPU.
HOST_MEMORY_VAR = "SCIPION_RECIPROCAL_HOST_MEMORY_GB"
GPU_MEMORY_VAR = "SCIPION_RECIPROCAL_GPU_MEMORY_GB"
