/**
 * `{{name}}`: a Weir transform.
 *
 * It masks one text column of every table that has it (default `phone`): all
 * but the last few characters (default 4) become `*`, so `"+1 555 0100"`
 * arrives as `"*******0100"`. The column is masked in both the new and the
 * old row. NULLs, TOASTed values an UPDATE did not send, values that are not
 * text and events without the column are delivered as they are. The counter
 * `masked` counts masked values.
 *
 * Configuration (the `config` table of the plugin in weir.toml):
 *
 * - `column`: the column to mask; default `phone`.
 * - `visible`: how many trailing characters stay readable; default 4.
 *
 * Replace this with your own logic: `process` sees one event at a time, with
 * its columns by name, and answers what becomes of it. The default export is
 * what build.mjs turns into the component.
 */

import { ConfigError, Outcome, Transform, count } from "./weir_plugin/index.js";

export default class MaskTail extends Transform {
  constructor(config) {
    super();
    config.checkKeys("column", "visible");
    this.column = config.get("column", "phone").trim();
    if (this.column === "") throw new ConfigError("config key `column`: name a column");
    this.visible = config.int("visible", 4, { min: 0 });
  }

  mask(text) {
    const hidden = Math.max(text.length - this.visible, 0);
    return "*".repeat(hidden) + text.slice(hidden);
  }

  process(event) {
    let masked = 0;
    for (const [value, before] of [
      [event.after(this.column), false],
      [event.before(this.column), true],
    ]) {
      if (value?.tag !== "text") continue;
      const hidden = this.mask(value.val);
      // Only a real change is written back: an untouched event stays a plain
      // keep, the cheapest answer to deliver.
      if (hidden === value.val) continue;
      if (before) event.setBefore(this.column, hidden);
      else event.set(this.column, hidden);
      masked += 1;
    }
    if (masked > 0) count("masked", masked);
    return Outcome.KEEP;
  }
}
