"""Helpers for protocol inputs (pointers)."""


def describePointer(pointer):
    """Name an input for messages: "outputParticles of 'import particles' (id 12)"."""
    source = pointer.getObjValue()
    obj = pointer.get()
    if source is None or obj is None:
        return "the input"
    if source is obj:  # a pointer straight to an object, not to a protocol output
        return "%s %s" % (obj.getClassName(), obj.getObjLabel() or "(id %s)" % obj.getObjId())
    label = source.getObjLabel() or source.getRunName()
    return "%s of '%s' (id %s)" % (pointer.getExtended(), label, source.getObjId())
