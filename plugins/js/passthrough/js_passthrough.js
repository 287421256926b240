/**
 * The smallest Weir transform in JavaScript: keeps every event as it is.
 *
 * It measures the cost of the plugin boundary and of the JavaScript glue:
 * each event still becomes an `Event` the plugin sees. It takes no
 * configuration.
 */

import { Outcome, Transform } from "../weir_plugin/index.js";

export default class Passthrough extends Transform {
  constructor(config) {
    super();
    config.checkKeys();
  }

  process() {
    return Outcome.KEEP;
  }
}
