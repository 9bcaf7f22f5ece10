"""scipion-reciprocal: which particles really belong together?

A Scipion 3 plugin.  The ``Plugin`` class lives in :mod:`scipion_reciprocal.plugin` and is
loaded on first access, so that the framework-free layers (``formats``, ``core``,
``simulate``, ``plotting``) and the ``scipion-reciprocal`` command import without pulling in
pyworkflow/pwem and their configuration side effects.
"""
__version__ = "0.1.0"


def __getattr__(name):
    # Scipion reads ``module.Plugin`` when it registers the plugin (PEP 562 lazy attribute).
    if name == "Plugin":
        from .plugin import Plugin
        globals()["Plugin"] = Plugin
        return Plugin
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
