/* Reactions: the chips under a message (emoji, count, pressed when the reader reacted, who
 * reacted on hover), a click toggles the reader's own; an "Add reaction" button opens the
 * picker, a modal dialog over the vendored emoji data (vendor/emoji, loaded on first use) with
 * search by name in English or Chinese and arrow-key navigation.
 *
 * The chips only ever follow the server: a click sends reaction.add/remove and the
 * message.updated that answers it redraws them, so a refused reaction leaves nothing behind. */
import {openDialog} from "./dialogs.js";
import {api, detailOf, el, fmt} from "./util.js";

const DATA_URL = new URL("../vendor/emoji/emoji.json", import.meta.url);
const QUICK = ["👍", "❤️", "😂", "🎉", "😮", "😢", "🙏", "👀"];
const GROUP_NAMES = {
  "smileys-emotion": gettext("Smileys and emotion"), "people-body": gettext("People and body"),
  "animals-nature": gettext("Animals and nature"), "food-drink": gettext("Food and drink"),
  "travel-places": gettext("Travel and places"), "activities": gettext("Activities"),
  "objects": gettext("Objects"), "symbols": gettext("Symbols"), "flags": gettext("Flags"),
};
const MAX_RESULTS = 200;

const lang = document.documentElement.lang || undefined;
let listFormat;
try {
  listFormat = new Intl.ListFormat(lang, {type: "conjunction"});
} catch {
  listFormat = new Intl.ListFormat(undefined, {type: "conjunction"});
}

/* "alice, bob and 3 others": the names the server listed (at most 20), then how many more. */
export function reactorsText(reaction, me) {
  const names = reaction.users.map((name) => (name === me ? gettext("you") : name));
  const others = reaction.count - names.length;
  if (others > 0) names.push(fmt(ngettext("%(count)s other", "%(count)s others", others), {count: others}));
  return listFormat.format(names);
}

export class Reactions {
  /* send(frame) -> bool puts a frame on the socket; get(id) finds a message shown anywhere. */
  constructor({me, send, get, onError}) {
    Object.assign(this, {me, send, get, onError});
    this.picker = null;
    this.pickFor = null;
    this.data = null;
    document.addEventListener("click", (event) => {
      const chip = event.target.closest(".reaction-chip");
      const add = event.target.closest(".react-button");
      if (chip) this.toggle(Number(chip.closest(".msg").dataset.id), chip.dataset.emoji);
      else if (add) this.openPicker(Number(add.closest(".msg").dataset.id));
    });
  }

  /* A fillMessage hook: the chip row under the body, and the hover button beside the menu. */
  render(node, message) {
    const main = node.querySelector(".msg-main");
    let row = node.querySelector(".reactions");
    const reactable = message.id && !message.deleted && message.kind !== "system";
    if (!reactable) {
      row?.remove();
      node.querySelector(".react-button.hover")?.remove();
      return;
    }
    if (!node.querySelector(".react-button.hover")) {
      node.querySelector(".msg-menu-button").before(this.addButton("hover"));
    }
    if (!row) {
      row = el("div", {className: "reactions", role: "group", "aria-label": gettext("Reactions")});
      main.append(row);
    }
    const reactions = message.reactions || [];
    row.hidden = reactions.length === 0;
    row.replaceChildren(...reactions.map((reaction) => this.chip(reaction)), this.addButton("more"));
  }

  chip(reaction) {
    const mine = reaction.users.includes(this.me);
    const who = reactorsText(reaction, this.me);
    return el("button", {
      type: "button", className: "reaction-chip", dataset: {emoji: reaction.emoji},
      title: fmt(gettext("%(who)s reacted with %(emoji)s"), {who, emoji: reaction.emoji}),
      "aria-pressed": String(mine),
      "aria-label": fmt(ngettext("%(emoji)s, %(count)s reaction: %(who)s", "%(emoji)s, %(count)s reactions: %(who)s",
                                 reaction.count), {emoji: reaction.emoji, count: reaction.count, who}),
    }, el("span", {className: "emoji", textContent: reaction.emoji}), el("span", {className: "count", textContent: String(reaction.count)}));
  }

  addButton(kind) {
    return el("button", {type: "button", className: `react-button ${kind}`, textContent: "☺+",
                         title: gettext("Add reaction"), "aria-label": gettext("Add reaction")});
  }

  toggle(id, emoji) {
    const message = this.get(id);
    const mine = message?.reactions?.find((r) => r.emoji === emoji)?.users.includes(this.me);
    this.react(id, emoji, !mine);
  }

  /* Over the socket when it is up, else over REST; either way the answer is a message.updated. */
  async react(id, emoji, add) {
    if (this.send({type: add ? "reaction.add" : "reaction.remove", id, emoji, ref: `reaction:${id}`})) return;
    const result = await api(add ? "POST" : "DELETE", `/api/messages/${id}/reactions/`, {emoji});
    if (!result.ok) this.onError(detailOf(result));
  }

  // The picker

  async openPicker(id) {
    this.pickFor = id;
    if (!this.picker) this.picker = this.buildPicker();
    const {dialog, search} = this.picker;
    search.value = "";
    openDialog(dialog);
    search.focus();
    if (!this.data) await this.load();
    this.filter();
  }

  buildPicker() {
    const search = el("input", {type: "search", id: "emoji-search", autocomplete: "off",
                                placeholder: gettext("Search by name")});
    const quick = el("div", {className: "emoji-quick", role: "group", "aria-label": gettext("Frequently used")},
      ...QUICK.map((emoji) => this.emojiButton([emoji, "", "", ""])));
    const list = el("div", {className: "emoji-list", "aria-live": "polite", "aria-busy": "true"},
      el("p", {className: "muted", textContent: gettext("Loading…")}));
    const close = el("button", {type: "button", className: "secondary", textContent: gettext("Close")});
    const dialog = el("dialog", {id: "emoji-dialog", className: "emoji-dialog", "aria-labelledby": "emoji-title"},
      el("h2", {id: "emoji-title", textContent: gettext("Add reaction")}),
      el("label", {htmlFor: "emoji-search", className: "visually-hidden", textContent: gettext("Search by name")}),
      search, quick, list, el("div", {className: "dialog-buttons"}, close));
    document.body.append(dialog);
    search.addEventListener("input", () => this.filter());
    search.addEventListener("keydown", (event) => {
      if (event.key === "ArrowDown") {
        event.preventDefault();
        this.buttons()[0]?.focus();
      } else if (event.key === "Enter") {
        event.preventDefault();
        list.querySelector(".emoji")?.click();
      }
    });
    dialog.addEventListener("keydown", (event) => this.gridKey(event));
    dialog.addEventListener("click", (event) => {
      const button = event.target.closest(".emoji");
      if (button) this.pick(button.dataset.emoji);
      else if (event.target === dialog) dialog.close();   // a click on the backdrop
    });
    close.addEventListener("click", () => dialog.close());
    return {dialog, search, quick, list};
  }

  async load() {
    try {
      const response = await fetch(DATA_URL);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      this.data = await response.json();
    } catch (error) {
      this.picker.list.replaceChildren(el("p", {className: "error", textContent:
        fmt(gettext("Could not load the emoji (%(error)s)."), {error: error.message})}));
      return;
    }
    const names = new Map(this.data.groups.flatMap((group) => group.emoji.map((entry) => [entry[0], entry])));
    this.picker.quick.replaceChildren(...QUICK.map((emoji) => this.emojiButton(names.get(emoji) || [emoji, "", "", ""])));
  }

  emojiButton(entry) {
    const [emoji, english, chinese] = entry;
    const name = (lang?.startsWith("zh") ? chinese : english) || english || emoji;
    return el("button", {type: "button", className: "emoji", textContent: emoji, title: name, "aria-label": name,
                         tabIndex: -1, dataset: {emoji}});
  }

  /* Every group, or the first MAX_RESULTS emoji whose names or words contain each typed word. */
  filter() {
    if (!this.data) return;
    const {list} = this.picker;
    const words = this.picker.search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    list.removeAttribute("aria-busy");
    if (words.length === 0) {
      list.replaceChildren(...this.data.groups.map((group) => el("section", {className: "emoji-group"},
        el("h3", {textContent: GROUP_NAMES[group.key] || group.key}),
        el("div", {className: "emoji-grid"}, ...group.emoji.map((entry) => this.emojiButton(entry))))));
    } else {
      const found = [];
      for (const group of this.data.groups) {
        for (const entry of group.emoji) {
          const haystack = `${entry[1]} ${entry[2]} ${entry[3]}`.toLowerCase();
          if (words.every((word) => haystack.includes(word) || entry[0] === word)) found.push(entry);
          if (found.length >= MAX_RESULTS) break;
        }
      }
      list.replaceChildren(found.length
        ? el("div", {className: "emoji-grid"}, ...found.map((entry) => this.emojiButton(entry)))
        : el("p", {className: "muted", textContent: gettext("No emoji match.")}));
    }
    const first = this.buttons()[0];
    if (first) first.tabIndex = 0;
  }

  buttons() {
    return Array.from(this.picker.dialog.querySelectorAll(".emoji"));
  }

  /* Arrows move between emoji as they are laid out: left and right in reading order, up and
   * down to the nearest emoji in the row above or below; Home and End to the ends. */
  gridKey(event) {
    const current = event.target.closest?.(".emoji");
    if (!current) return;
    const buttons = this.buttons();
    const index = buttons.indexOf(current);
    let target = null;
    if (event.key === "ArrowRight") target = buttons[index + 1];
    else if (event.key === "ArrowLeft") target = buttons[index - 1];
    else if (event.key === "Home") target = buttons[0];
    else if (event.key === "End") target = buttons[buttons.length - 1];
    else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      target = nearestInRow(current, buttons, event.key === "ArrowDown" ? 1 : -1);
      if (!target && event.key === "ArrowUp") target = this.picker.search;
    } else return;
    event.preventDefault();
    if (!target) return;
    buttons.forEach((button) => { button.tabIndex = -1; });
    if (target.classList.contains("emoji")) target.tabIndex = 0;
    target.focus();
    target.scrollIntoView?.({block: "nearest"});
  }

  pick(emoji) {
    const id = this.pickFor;
    this.picker.dialog.close();
    if (id) this.react(id, emoji, true);
  }
}

function nearestInRow(current, buttons, direction) {
  const here = current.getBoundingClientRect();
  const rows = buttons.map((button) => [button, button.getBoundingClientRect()])
    .filter(([, rect]) => (direction > 0 ? rect.top > here.top + here.height / 2 : rect.top < here.top - here.height / 2));
  if (rows.length === 0) return null;
  const rowTop = direction > 0 ? Math.min(...rows.map(([, r]) => r.top)) : Math.max(...rows.map(([, r]) => r.top));
  const row = rows.filter(([, rect]) => Math.abs(rect.top - rowTop) < 2);
  row.sort(([, a], [, b]) => Math.abs(a.left - here.left) - Math.abs(b.left - here.left));
  return row[0][0];
}
