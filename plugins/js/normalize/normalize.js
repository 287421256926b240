/**
 * A Weir transform that tidies text columns and drops events that lack
 * required values.
 *
 * Configuration (comma-separated column names, each applied in every table
 * that has the column; at least one key must be set):
 *
 * - `trim`: remove leading and trailing whitespace from these text columns.
 * - `lowercase`: lower-case these text columns.
 * - `require`: drop events whose new row has NULL or an empty string (after
 *   trimming and lower-casing) in any of these columns. Deletes, truncates
 *   and messages carry no new row and are kept: their old row usually holds
 *   only the key, so requiring a column there would drop every delete.
 *
 * Both the new and the old row are normalised, so a sink keyed on a
 * normalised column sees the same key in an update's before and after.
 * Values that are not text, NULLs and TOASTed values the UPDATE did not send
 * are left alone (an unchanged value counts as present for `require`).
 * Each dropped event adds 1 to the counter `dropped`.
 */

import { ConfigError, Outcome, Transform, count } from "../weir_plugin/index.js";

export default class Normalize extends Transform {
  constructor(config) {
    super();
    config.checkKeys("trim", "lowercase", "require");
    this.trim = new Set(config.list("trim"));
    this.lowercase = new Set(config.list("lowercase"));
    this.require = config.list("require");
    if (this.trim.size + this.lowercase.size + this.require.length === 0) {
      throw new ConfigError("configure at least one of `trim`, `lowercase` or `require`");
    }
    // Table id -> { tidy: [[column, trim, lowercase]], required: [column] },
    // for the columns each announced version actually has.
    this.plans = new Map();
  }

  onTable(table) {
    const tidy = [...new Set([...this.trim, ...this.lowercase])]
      .filter((c) => table.columnIndex(c) !== undefined)
      .map((c) => [c, this.trim.has(c), this.lowercase.has(c)]);
    const required = this.require.filter((c) => table.columnIndex(c) !== undefined);
    this.plans.set(table.id, { tidy, required });
  }

  process(event) {
    const plan = event.table && this.plans.get(event.table.id);
    if (plan === undefined) return Outcome.KEEP;
    for (const [column, trim, lower] of plan.tidy) {
      tidy(event, column, event.after(column), trim, lower, false);
      tidy(event, column, event.before(column), trim, lower, true);
    }
    if (event.change.after != null) {
      for (const column of plan.required) {
        const v = event.after(column);
        if (v.tag === "null" || v.val === "") {
          count("dropped");
          return Outcome.DROP;
        }
      }
    }
    return Outcome.KEEP;
  }
}

function tidy(event, column, v, trim, lower, before) {
  if (v?.tag !== "text") return;
  let s = trim ? v.val.trim() : v.val;
  if (lower) s = s.toLowerCase();
  // Only a real change makes the event modified (and re-sent in full).
  if (s === v.val) return;
  if (before) event.setBefore(column, s);
  else event.set(column, s);
}
