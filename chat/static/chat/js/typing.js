/* "alice is typing…": each name shows for a few seconds after its last typing frame. */
import {fmt} from "./util.js";

const TYPING_SHOWN_MS = 3000;

export class Typists {
  constructor(line) {
    this.line = line;
    this.timers = new Map();   // username -> timer that hides them
  }

  typing(name) {
    clearTimeout(this.timers.get(name));
    this.timers.set(name, setTimeout(() => this.stop(name), TYPING_SHOWN_MS));
    this.render();
  }

  stop(name) {
    clearTimeout(this.timers.get(name));
    if (this.timers.delete(name)) this.render();
  }

  render() {
    const names = Array.from(this.timers.keys());
    this.line.textContent = names.length === 0 ? ""
      : fmt(ngettext("%(names)s is typing…", "%(names)s are typing…", names.length), {names: names.join(", ")});
  }
}
