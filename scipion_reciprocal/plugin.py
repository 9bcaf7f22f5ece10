"""The Scipion Plugin class: backend-environment variables and the install hook."""
import os

import pwem
from pyworkflow.utils import Environ

from . import __version__
from .constants import PLUGIN_URL
from .environments import BACKENDS, clean_environ, get_backend

#: Scipion's marker for "no tarball": with a local url nothing is downloaded.
_NO_DOWNLOAD = dict(tar="void.tgz", url="file:/dev/null")


class Plugin(pwem.Plugin):
    # Scipion derives the plugin's name and folder from the class's module; the class is
    # re-exported lazily by the package, so it presents itself as the package's.
    __module__ = "scipion_reciprocal"
    _url = PLUGIN_URL
    _supportedVersions = [__version__]

    @classmethod
    def _defineVariables(cls):
        for backend in BACKENDS.values():
            cls._defineVar(
                backend.activation_var, backend.default_activation(pwem.Config.EM_ROOT),
                description="Shell command that activates the %s backend environment (%s). "
                            "Default: the environment made by 'scipion installb %s'. Set it to "
                            "e.g. 'conda activate myenv' or 'module load x' to use your own."
                            % (backend.name, backend.description, backend.name))

    @classmethod
    def getEnviron(cls):
        """Environment for backend programs: Scipion's PYTHONPATH/PYTHONHOME removed."""
        return Environ(clean_environ())

    @classmethod
    def getActivation(cls, backendName):
        backend = get_backend(backendName)
        # Before Scipion registers the plugin (e.g. plain scripts) the variable is not loaded.
        return (cls.getVar(backend.activation_var) or os.environ.get(backend.activation_var)
                or backend.default_activation(pwem.Config.EM_ROOT))

    @classmethod
    def validateBackend(cls, backendName):
        """Errors (a list, for ``_validate``) when backend ``backendName`` cannot be used."""
        backend = get_backend(backendName)
        reason = backend.missing_reason(pwem.Config.EM_ROOT, cls.getActivation(backendName))
        return [] if reason is None else ["Cannot run %s: %s" % (backend.name, reason)]

    @classmethod
    def defineBinaries(cls, env):
        for backend in BACKENDS.values():
            marker = backend.marker(pwem.Config.EM_ROOT)
            env.addPackage(
                backend.name, version=backend.version, default=False,
                commands=[(backend.install_command(pwem.Config.EM_ROOT),
                           str(marker.relative_to(backend.home(pwem.Config.EM_ROOT))))],
                **_NO_DOWNLOAD)
