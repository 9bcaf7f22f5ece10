"""Workflow templates shipped with the plugin, run from Python with Scipion's own machinery.

Every ``*.json.template`` file in the package's ``templates/`` folder is a template: Scipion
lists it (``python -m scipion template``) under the id ``scipion_reciprocal-<file name>``, and
runs it with ``python -m scipion template scipion_reciprocal-NAME --nogui alias=value ...``.
Fields are written ``~Label|default|type|alias~``; a field used in several places of the
workflow (a job number, a pixel size) appears once per place with the same alias, so one
``alias=value`` sets them all.

:func:`run_template` does the same from Python: it fills the fields through
:class:`pyworkflow.template.Template`, creates the project from the resulting workflow
(``Project.loadProtocols``, as Scipion's ``create.py`` does) and launches the protocols one
after the other in dependency order (or hands them to Scipion's scheduler).
"""
import json
import os
import time
from pathlib import Path

from .. import scipion_setup

PLUGIN_NAME = "scipion_reciprocal"
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
TEMPLATE_SUFFIX = ".json.template"


class TemplateError(RuntimeError):
    """A template is unknown, a field value does not validate, or a protocol failed."""


def template_names():
    """Names of the shipped templates (file names without ``.json.template``), sorted."""
    return sorted(path.name[:-len(TEMPLATE_SUFFIX)]
                  for path in TEMPLATES_DIR.glob("*" + TEMPLATE_SUFFIX))


def template_id(name):
    """Scipion's id of a shipped template: what ``python -m scipion template`` accepts."""
    return "%s-%s" % (PLUGIN_NAME, name)


def load_template(name):
    """The :class:`pyworkflow.template.Template` of ``name`` with its fields parsed.

    ``name`` is a shipped template's name or id, or the path of a ``.json.template`` file.
    Templates are found the way Scipion finds them (the plugin's ``getTemplates``).
    """
    scipion_setup.configure()
    from pyworkflow.template import LocalTemplate, TemplateList

    if os.path.isfile(str(name)):
        template = LocalTemplate("custom_template", str(name))
    else:
        wanted = str(name) if str(name).startswith(PLUGIN_NAME + "-") else template_id(name)
        found = TemplateList()
        found.addPluginTemplates(wanted)
        if not found.templates:
            raise TemplateError("No workflow template %r; the plugin ships: %s"
                                % (name, ", ".join(template_names())))
        template = found.templates[0]
    template.replaceEnvVariables()
    template.parseContent()
    return template


def template_fields(name):
    """``alias -> (label, default, type)`` of a template's fields (first use of each alias)."""
    fields = {}
    for param in load_template(name).getParams().values():
        fields.setdefault(param.getAlias(), (param.getTitle(), param.getValue(), param.getType()))
    return fields


def fill_template(template, aliases):
    """Set ``alias=value`` on ``template``; fields not given keep their default.

    Raises :class:`TemplateError` for an unknown alias or a value that does not validate.
    """
    known = {param.getAlias() for param in template.getParams().values()}
    unknown = sorted(set(aliases) - known)
    if unknown:
        raise TemplateError("Template %s has no field %s; its fields: %s"
                            % (template.name, ", ".join(unknown), ", ".join(sorted(known))))
    for alias, value in aliases.items():
        try:
            template.setParamValue(alias, str(value))
        except Exception as error:  # pyworkflow raises a bare Exception
            raise TemplateError(str(error)) from error
    errors = ["%s (%s) = %r: %s" % (param.getTitle(), param.getAlias(), param.getValue(), message)
              for param in template.getParams().values()
              for message in [param.validate()] if message]
    if errors:
        raise TemplateError("Template %s:\n  %s" % (template.name, "\n  ".join(errors)))
    return template


def create_project(name, project_name=None, **aliases):
    """Create a Scipion project holding a template's protocols (saved, not run).

    ``name`` and ``aliases`` as in :func:`run_template`.  Returns the project; the working
    directory is the project's folder (Scipion's project paths are relative).
    """
    template = fill_template(load_template(name), aliases)
    from pyworkflow.project import Manager

    if not project_name:
        template.genProjectName()
        project_name = template.projectName
    manager = Manager()
    if manager.hasProject(project_name):
        manager.deleteProject(project_name)
    project = manager.createProject(project_name, comment=template.description)
    _load(project, template)
    return project


def add_template(project, name, **aliases):
    """Add a template's protocols (saved, not run) to an existing project.

    What the project window's "import workflow" does; :func:`run_project` then runs them.
    Returns the new protocols in the template's order.
    """
    return _load(project, fill_template(load_template(name), aliases))


def _load(project, template):
    os.chdir(project.getPath())
    workflow = template.createTemplateFile()
    try:
        created = project.loadProtocols(workflow)
        _restore_labels(project, created, workflow)
    finally:
        os.remove(workflow)
    return list(created.values())


def run_template(name, project_name=None, schedule=False, log=print, **aliases):
    """Create a Scipion project from a workflow template and run it.

    Parameters
    ----------
    name : str
        A shipped template's name (``reciprocal_consensus_maps``), its Scipion id, or the path
        of a ``.json.template`` file.
    project_name : str, optional
        Default: Scipion's generated name (``<template id>-<date>-<time>``). An existing
        project of that name is replaced.
    schedule : bool
        False (default): launch the protocols one after the other, waiting for each, and raise
        :class:`TemplateError` with the log tail of the first that fails.  True: hand each
        protocol to Scipion's scheduler once (see :func:`schedule_project`) and return at once.
    **aliases
        Field values by alias (``relionDir="/data/relion"``, ``job1="085"``); fields not
        given keep the template's default.

    Returns
    -------
    pyworkflow.project.Project
        The project, with its protocols finished (or scheduled).
    """
    project = create_project(name, project_name, **aliases)
    log("Project %s created from template %s" % (project.getShortName(), name))
    if schedule:
        schedule_project(project)
    else:
        run_project(project, log)
    return project


def run_project(project, log=print):
    """Launch the project's saved protocols in dependency order, waiting for each.

    For a project made by ``python -m scipion template ... --noschedule``, or by
    :func:`create_project`.  Raises :class:`TemplateError` with the log tail of the first
    protocol that fails.
    """
    os.chdir(project.getPath())
    for protocol in _dependency_order(project):
        _launch(project, protocol, log)


def schedule_project(project):
    """Hand each saved protocol of the project to Scipion's scheduler, once.

    Scipion's own ``schedule.py`` (what ``python -m scipion template`` runs) schedules the
    workflow below every import protocol separately, so a protocol with inputs from two
    imports (the classifier's training) gets two schedulers and runs twice at the same time.
    This schedules every protocol once; each waits for its inputs as usual.
    """
    os.chdir(project.getPath())
    for protocol in _dependency_order(project):
        project.scheduleProtocol(protocol)


def wait_for_runs(project, timeout=600, poll=2.0):
    """Wait until no run of ``project`` is active (launched, scheduled or running).

    Returns ``{label: status}`` of every run; raises :class:`TemplateError` on timeout.
    """
    deadline = time.time() + timeout
    while True:
        runs = project.getRuns(refresh=True)
        if not any(run.isActive() or run.isScheduled() for run in runs):
            return {run.getObjLabel(): run.getStatus() for run in runs}
        if time.time() > deadline:
            raise TemplateError("Runs still active after %d s: %s" % (timeout, ", ".join(
                "%s (%s)" % (run.getObjLabel(), run.getStatus()) for run in runs
                if run.isActive() or run.isScheduled())))
        time.sleep(poll)


def _dependency_order(project):
    """The project's saved protocols, each after those it reads from or waits for."""
    graph = project.getRunsGraph(refresh=True)
    runs = {run.getObjId(): run for run in project.getRuns() if run.isSaved()}
    needs = {}
    for protId in runs:
        node = graph.getNode(str(protId))
        parents = {parent.run.getObjId() for parent in node.getParents()
                   if parent.run and parent.run.getObjId() in runs}
        waits = {int(p) for p in runs[protId].getPrerequisites() if int(p) in runs}
        needs[protId] = parents | waits
    ordered, done = [], set()
    while len(ordered) < len(runs):
        ready = sorted(p for p in runs if p not in done and needs[p] <= done)
        if not ready:
            raise TemplateError("The workflow's protocols depend on each other in a cycle")
        ordered.append(ready[0])
        done.add(ready[0])
    return [runs[protId] for protId in ordered]


def _restore_labels(project, created, workflow):
    """Give the protocols the labels and comments of the workflow file.

    pyworkflow 3.11's ``loadProtocols`` passes them to the protocol's constructor, which drops
    them (``Step.__init__`` does not forward its keyword arguments), so every run would get its
    class's default label.
    """
    with open(workflow) as handle:
        entries = {str(entry["object.id"]): entry for entry in json.load(handle)}
    for jsonId, protocol in created.items():
        entry = entries.get(str(jsonId), {})
        if entry.get("object.label"):
            protocol.setObjLabel(entry["object.label"])
        if entry.get("object.comment"):
            protocol.setObjComment(entry["object.comment"])
        project.mapper.store(protocol)
    project.mapper.commit()


def _launch(project, protocol, log):
    label = protocol.getObjLabel()
    log("Running '%s' ..." % label)
    # A protocol that waits for others is scheduled by Scipion, not run: wait for it.
    project.launchProtocol(protocol, wait=True)
    if protocol.getPrerequisites():
        wait_for_runs(project, timeout=24 * 3600)
    protocol = project.getProtocol(protocol.getObjId())
    if not protocol.isFinished():
        raise TemplateError("Template protocol '%s' %s:\n%s"
                            % (label, protocol.getStatusMessage(), "".join(log_tail(protocol))))
    return protocol


def log_tail(protocol, lines=30):
    """The last ``lines`` lines of a protocol's stdout log (empty when there is none)."""
    path = protocol.getStdoutLog()
    if not path or not os.path.exists(path):
        return []
    with open(path, errors="replace") as handle:
        return handle.readlines()[-lines:]


def main(argv=None):
    """``python -m scipion_reciprocal.workflows.templates``: list, run or continue templates."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m scipion_reciprocal.workflows.templates",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the shipped templates and their fields")
    run = sub.add_parser("run", help="create a project from a template and run it")
    run.add_argument("template")
    run.add_argument("fields", nargs="*", metavar="alias=value")
    run.add_argument("--project", help="project name (default: generated)")
    run.add_argument("--schedule", action="store_true",
                     help="hand the protocols to Scipion's scheduler and return")
    cont = sub.add_parser("continue", help="run the saved protocols of an existing project "
                                           "(e.g. made by 'scipion template ... --noschedule')")
    cont.add_argument("project")
    cont.add_argument("--schedule", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for name in template_names():
                print("%s  (python -m scipion template %s)" % (name, template_id(name)))
                for alias, (label, default, _) in template_fields(name).items():
                    print("    %s=%s  %s" % (alias, default, label))
        elif args.command == "run":
            aliases = dict(field.split("=", 1) for field in args.fields)
            run_template(args.template, args.project, schedule=args.schedule, **aliases)
        else:
            scipion_setup.configure()
            from pyworkflow.project import Manager
            project = Manager().loadProject(args.project)
            (schedule_project if args.schedule else run_project)(project)
    except TemplateError as error:
        parser.exit(1, "error: %s\n" % error)


if __name__ == "__main__":
    main()
