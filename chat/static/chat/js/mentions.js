/* @mention suggestions in the composer, the ARIA combobox pattern on a textarea: typing `@` and the start of a name
 * opens a listbox of the room's members, then other users (GET /api/users/?q=), and @room;
 * Up and Down move, Enter or Tab insert the name, Escape closes. */
import {$, api, el, fmt} from "./util.js";

const SHOWN = 8;
const ROOM_WORDS = ["room", "all"];
// `@` at the start or after a space or an opening bracket, then the name typed so far, up to the caret.
const TOKEN = /(^|[\s([{])@([\w.+-]*)$/u;

export class MentionSuggestions {
  /* members() -> usernames of the room (the members panel's list); me is left out. */
  constructor({input, form, members, me}) {
    Object.assign(this, {input, members, me});
    if (!input) return;
    this.list = el("ul", {id: "mention-list", className: "mention-list", role: "listbox", hidden: true,
                          "aria-label": gettext("People to mention")});
    form.append(this.list);
    this.options = [];
    this.active = -1;
    this.query = null;
    this.fetched = new Map();   // prefix -> usernames from the API
    // A <textarea> may not take role=combobox (ARIA in HTML): as a textbox it keeps the combobox's
    // other attributes, and a status line says how many suggestions opened.
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", this.list.id);
    this.status = el("div", {className: "visually-hidden", role: "status"});
    form.append(this.status);
    input.addEventListener("input", () => this.refresh());
    input.addEventListener("click", () => this.refresh());
    input.addEventListener("blur", () => setTimeout(() => this.close(), 150));
    // Capture on the form: the composer's own Enter (send) must not see a key the list takes.
    form.addEventListener("keydown", (event) => this.keydown(event), true);
    this.list.addEventListener("mousedown", (event) => event.preventDefault());   // keep the caret in the box
    this.list.addEventListener("click", (event) => {
      const option = event.target.closest("[role=option]");
      if (option) this.choose(Number(option.dataset.index));
    });
  }

  /* The `@prefix` just before the caret, or null. */
  token() {
    if (this.input.selectionStart !== this.input.selectionEnd) return null;
    const match = TOKEN.exec(this.input.value.slice(0, this.input.selectionStart));
    return match ? match[2] : null;
  }

  async refresh() {
    const prefix = this.token();
    this.query = prefix;
    if (prefix === null) return this.close();
    const lower = prefix.toLowerCase();
    const names = this.members().filter((name) => name !== this.me && name.toLowerCase().startsWith(lower));
    names.sort((a, b) => a.localeCompare(b));
    const words = ROOM_WORDS.filter((word) => word.startsWith(lower)).slice(0, 1);
    this.show([...names, ...words]);
    if (!prefix) return;
    if (!this.fetched.has(lower)) {
      const result = await api("GET", `/api/users/?${new URLSearchParams({q: prefix, limit: SHOWN})}`);
      this.fetched.set(lower, result.ok ? result.data.map((user) => user.username) : []);
    }
    if (this.query !== prefix) return;   // typed on meanwhile
    const more = this.fetched.get(lower).filter((name) => name !== this.me && !names.includes(name));
    this.show([...names, ...more, ...words]);
  }

  show(names) {
    const current = this.options[this.active];
    this.options = names.slice(0, SHOWN + 1);
    if (this.options.length === 0) return this.close();
    this.list.replaceChildren(...this.options.map((name, index) => el("li", {
      id: `mention-option-${index}`, role: "option", className: "mention-option", dataset: {index: String(index)},
      textContent: `@${name}`, dir: "auto",
    })));
    if (this.list.hidden || this.status.textContent === "") {
      this.status.textContent = fmt(ngettext("%(count)s suggestion: Up and Down to choose, Enter to insert",
                                             "%(count)s suggestions: Up and Down to choose, Enter to insert",
                                             this.options.length), {count: this.options.length});
    }
    this.list.hidden = false;
    this.select(Math.max(0, this.options.indexOf(current)));
  }

  select(index) {
    this.active = (index + this.options.length) % this.options.length;
    for (const option of this.list.children) {
      option.setAttribute("aria-selected", String(Number(option.dataset.index) === this.active));
    }
    this.input.setAttribute("aria-activedescendant", `mention-option-${this.active}`);
    this.list.children[this.active]?.scrollIntoView({block: "nearest"});
  }

  close() {
    if (!this.list) return;
    this.list.hidden = true;
    this.options = [];
    this.active = -1;
    this.status.textContent = "";
    this.input.removeAttribute("aria-activedescendant");
  }

  keydown(event) {
    if (event.target !== this.input || this.list.hidden || event.isComposing) return;
    const keys = {
      ArrowDown: () => this.select(this.active + 1),
      ArrowUp: () => this.select(this.active - 1),
      Enter: () => this.choose(this.active),
      Tab: () => this.choose(this.active),
      Escape: () => this.close(),
    };
    if (!keys[event.key] || event.shiftKey && event.key !== "Tab") return;
    event.preventDefault();
    event.stopPropagation();
    keys[event.key]();
  }

  /* Replace the `@prefix` before the caret with the chosen name and a space. */
  choose(index) {
    const name = this.options[index];
    const prefix = this.token();
    if (name === undefined || prefix === null) return this.close();
    const caret = this.input.selectionStart;
    const start = caret - prefix.length;
    this.input.value = `${this.input.value.slice(0, start)}${name} ${this.input.value.slice(caret)}`;
    this.input.selectionStart = this.input.selectionEnd = start + name.length + 1;
    this.close();
    this.input.dispatchEvent(new Event("input"));   // the composer saves the draft and counts
  }
}

/* The "Formatting help" disclosure beside the composer is plain <details>; it closes on Escape. */
export function wireFormattingHelp() {
  const help = $("format-help");
  help?.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && help.open) {
      help.open = false;
      help.querySelector("summary").focus();
    }
  });
}
