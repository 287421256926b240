"""The smallest Weir transform in Python: keeps every event as it is.

It measures the cost of the plugin boundary and of the Python glue: each
event still becomes an `Event` the plugin sees. It takes no configuration.
"""

from weir_plugin import Outcome, Transform, export_transform


class Passthrough(Transform):
    """Keeps every event."""

    def __init__(self, config):
        config.check_keys()

    def process(self, event):
        return Outcome.KEEP


WitWorld = export_transform(Passthrough)
