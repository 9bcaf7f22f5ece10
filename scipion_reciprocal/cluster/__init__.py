"""Cluster execution: the SLURM ``hosts.conf`` that Scipion's queue system reads.

``hosts.conf.slurm`` (next to this module) is a documented, working configuration: it is the
file the SLURM test submits through.  :func:`slurm_hosts_conf` returns it with your partitions
in place of the example's ``gpu``/``cpu`` queues; :func:`write_hosts_conf` writes it.
No Scipion import here: the command line uses this before any Scipion home exists.
"""
import json
import re
import shutil
from pathlib import Path

#: The shipped example.
SLURM_HOSTS_CONF = Path(__file__).with_name("hosts.conf.slurm")

_QUEUES_BLOCK = re.compile(r"^QUEUES = .*?(?=^\S|\Z)", re.MULTILINE | re.DOTALL)


def _queues_block(text):
    match = _QUEUES_BLOCK.search(text)
    if match is None:
        raise ValueError("%s has no QUEUES entry" % SLURM_HOSTS_CONF)
    return match


def example_queues():
    """The QUEUES of the shipped example: ``{name: [[var, default, label, help], ...]}``."""
    block = _queues_block(SLURM_HOSTS_CONF.read_text()).group(0)
    return json.loads(block.split("=", 1)[1])


def slurm_hosts_conf(queues=None):
    """Text of the SLURM ``hosts.conf``.

    Parameters
    ----------
    queues : dict, optional
        ``{partition: {"JOB_MEMORY": "16G", "JOB_TIME": "04:00:00"}}``; each becomes a queue
        of that name (passed to ``sbatch --partition``) whose dialog shows these defaults.
        Missing values take the example's ``cpu`` queue defaults.  None keeps the example's
        ``gpu`` and ``cpu`` queues.

    Returns
    -------
    str
        The configuration, ready to be written where SCIPION_HOSTS points.
    """
    text = SLURM_HOSTS_CONF.read_text()
    if queues is None:
        return text
    if not queues:
        raise ValueError("give at least one queue (SLURM partition)")
    template = example_queues()["cpu"]
    entries = {}
    for name, values in queues.items():
        if not name or any(c.isspace() for c in name):
            raise ValueError("queue name %r is not a SLURM partition name" % name)
        unknown = set(values) - {p[0] for p in template}
        if unknown:
            raise ValueError("queue %s: unknown parameters %s" % (name, ", ".join(sorted(unknown))))
        entries[name] = [[var, str(values.get(var, default)), label, help_]
                         for var, default, label, help_ in template]
    match = _queues_block(text)
    return text[:match.start()] + "QUEUES = " + _format_queues(entries) + text[match.end():]


def _format_queues(entries):
    """QUEUES as JSON laid out like the example: one parameter per line, lines indented."""
    queues = []
    for name, parameters in entries.items():
        rows = ",\n".join("        " + json.dumps(p) for p in parameters)
        queues.append("    %s: [\n%s\n    ]" % (json.dumps(name), rows))
    return "{\n" + ",\n".join(queues) + "\n  }\n"


def write_hosts_conf(path, queues=None, force=False):
    """Write :func:`slurm_hosts_conf` to ``path``.

    An existing different file is refused unless ``force``, and then kept as ``path.bak``.
    Returns the path written.
    """
    path = Path(path).expanduser()
    text = slurm_hosts_conf(queues)
    if path.exists() and path.read_text() != text:
        if not force:
            raise FileExistsError("%s exists; replace it with --force (force=True); the old "
                                  "one is kept as %s.bak" % (path, path.name))
        shutil.copyfile(path, str(path) + ".bak")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
