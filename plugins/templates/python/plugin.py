"""`{{name}}`: a Weir transform.

It masks one text column of every table that has it (default `phone`): all
but the last few characters (default 4) become `*`, so `"+1 555 0100"`
arrives as `"*******0100"`. The column is masked in both the new and the old
row. NULLs, TOASTed values an UPDATE did not send, values that are not text
and events without the column are delivered as they are. The counter
`masked` counts masked values.

Configuration (the `config` table of the plugin in weir.toml):

* `column`: the column to mask; default `phone`.
* `visible`: how many trailing characters stay readable; default 4.

Replace this with your own logic: `process` sees one event at a time, with
its columns by name, and answers what becomes of it.
"""

from weir_plugin import ConfigError, Outcome, Text, Transform, count, export_transform


class MaskTail(Transform):
    """Masks all but the tail of one text column."""

    def __init__(self, config):
        config.check_keys("column", "visible")
        self.column = config.get("column", "phone").strip()
        if not self.column:
            raise ConfigError("config key `column`: name a column")
        self.visible = config.int("visible", 4, min=0)

    def mask(self, text: str) -> str:
        hidden = max(len(text) - self.visible, 0)
        return "*" * hidden + text[hidden:]

    def process(self, event):
        masked = 0
        for value, setter in (
            (event.after(self.column), event.set),
            (event.before(self.column), event.set_before),
        ):
            # Only a real change is written back: an untouched event stays a
            # plain keep, the cheapest answer to deliver.
            if isinstance(value, Text) and self.mask(value.value) != value.value:
                setter(self.column, Text(self.mask(value.value)))
                masked += 1
        if masked:
            count("masked", masked)
        return Outcome.KEEP


# What componentize-py exports: the component's `init`, `on-table`,
# `process` and `commit` call into MaskTail.
WitWorld = export_transform(MaskTail)
