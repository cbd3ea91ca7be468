/* Each message's actions: a menu opened by its button, a right click or a long press, and run
 * from it: edit in place, delete after confirming, report with a reason, copy a link that
 * opens the room at the message. */
import {confirmDialog, openDialog} from "./dialogs.js";
import {$, api, detailOf, el, toast} from "./util.js";

const LONG_PRESS_MS = 550;

export class MessageActions {
  /* send(frame) -> bool puts a frame on the socket; timeline gives the messages; more(message)
   * gives other modules' items ([label, run], e.g. reactions and threads) for a live message;
   * get(id) finds a message shown outside the timeline too (the thread panel). */
  constructor({timeline, room, me, canModerate, send, onError, more = () => [], get = (id) => timeline.get(id)}) {
    Object.assign(this, {timeline, room, me, canModerate, send, onError, more, get});
    this.menu = el("div", {className: "menu", role: "menu", hidden: true, id: "msg-menu"});
    document.body.append(this.menu);
    this.openFor = null;
    this.editing = null;
    const list = timeline.list;
    list.addEventListener("click", (event) => {
      const button = event.target.closest(".msg-menu-button");
      if (button) this.open(button.closest(".msg"), button);
    });
    list.addEventListener("contextmenu", (event) => {
      const node = event.target.closest(".msg");
      if (!node || event.target.closest("textarea") || !node.dataset.id) return;
      event.preventDefault();
      this.open(node, node.querySelector(".msg-menu-button"), {x: event.clientX, y: event.clientY});
    });
    let pressTimer = null;
    let pressed = false;
    list.addEventListener("touchstart", (event) => {
      const node = event.target.closest(".msg");
      if (!node || !node.dataset.id) return;
      pressed = false;
      pressTimer = setTimeout(() => {
        pressed = true;
        this.open(node, node.querySelector(".msg-menu-button"));
      }, LONG_PRESS_MS);
    }, {passive: true});
    list.addEventListener("touchend", (event) => {
      clearTimeout(pressTimer);
      // The finger that opened the menu must not click too: a link under it, or the pane taking focus.
      if (pressed) event.preventDefault();
      pressed = false;
    });
    for (const type of ["touchmove", "touchcancel"]) {
      list.addEventListener(type, () => clearTimeout(pressTimer), {passive: true});
    }
    this.menu.addEventListener("keydown", (event) => this.menuKey(event));
    document.addEventListener("pointerdown", (event) => {
      if (!this.menu.hidden && !this.menu.contains(event.target) && !event.target.closest(".msg-menu-button")) this.close();
    });
  }

  itemsFor(message, node) {
    const mine = message.author?.username === this.me;
    const items = [];
    if (message.kind === "system" || message.deleted) {
      items.push([gettext("Copy link"), () => this.copyLink(message)]);
      return items;
    }
    if (mine) items.push([gettext("Edit"), () => this.startEdit(message.id, node)]);
    if (mine || this.canModerate) items.push([gettext("Delete"), () => this.remove(message)]);
    items.push(...this.more(message));
    if (!mine) items.push([gettext("Report"), () => this.report(message)]);
    items.push([gettext("Copy link"), () => this.copyLink(message)]);
    return items;
  }

  open(node, button, at = null) {
    const message = this.get(Number(node.dataset.id));
    if (!message) return;
    this.close();
    this.openFor = {node, button};
    node.classList.add("menu-open");
    button.setAttribute("aria-expanded", "true");
    this.menu.replaceChildren(...this.itemsFor(message, node).map(([label, run]) => {
      const item = el("button", {type: "button", role: "menuitem", textContent: label, tabIndex: -1});
      item.addEventListener("click", () => {
        this.close();   // focus back on the message's button, where a dialog returns it
        run();
      });
      return item;
    }));
    this.menu.setAttribute("aria-label", button.getAttribute("aria-label"));
    this.menu.hidden = false;
    const rect = button.getBoundingClientRect();
    const x = at ? at.x : rect.right - this.menu.offsetWidth;
    const y = at ? at.y : rect.bottom + 4;
    this.menu.style.left = `${Math.max(4, Math.min(x, innerWidth - this.menu.offsetWidth - 4))}px`;
    this.menu.style.top = `${Math.max(4, Math.min(y, innerHeight - this.menu.offsetHeight - 4))}px`;
    this.menu.firstElementChild.focus();
  }

  close(restoreFocus = true) {
    if (this.menu.hidden) return;
    this.menu.hidden = true;
    if (this.openFor) {
      this.openFor.node.classList.remove("menu-open");
      this.openFor.button.setAttribute("aria-expanded", "false");
      if (restoreFocus) this.openFor.button.focus();
    }
    this.openFor = null;
  }

  menuKey(event) {
    const items = Array.from(this.menu.children);
    const index = items.indexOf(document.activeElement);
    const moves = {ArrowDown: index + 1, ArrowUp: index - 1, Home: 0, End: items.length - 1};
    if (event.key in moves) {
      event.preventDefault();
      items[(moves[event.key] + items.length) % items.length].focus();
    } else if (event.key === "Escape" || event.key === "Tab") {
      event.preventDefault();
      this.close();
    }
  }

  // Edit in place: Enter saves, Escape cancels.

  startEdit(id, node = this.timeline.nodes.get(id)) {
    const message = this.get(id);
    if (!message || !node || this.editing) return;
    const body = node.querySelector(".body");
    const input = el("textarea", {value: message.body, rows: 2, dir: "auto"});
    input.setAttribute("aria-label", gettext("Edit message"));
    const save = el("button", {type: "submit", textContent: gettext("Save")});
    const cancel = el("button", {type: "button", className: "secondary", textContent: gettext("Cancel")});
    const form = el("form", {className: "msg-edit"}, input, el("div", {className: "buttons"}, save, cancel,
      el("span", {className: "muted", textContent: gettext("Enter to save, Escape to cancel")})));
    body.hidden = true;
    body.after(form);
    this.editing = {id, form, body};
    const finish = () => {
      form.remove();
      body.hidden = false;
      this.editing = null;
      node.querySelector(".msg-menu-button").focus();
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = input.value;
      if (text.trim() && text !== message.body) {
        if (!this.send({type: "message.edit", id, body: text, ref: `edit:${id}`})) {
          this.onError(gettext("Not connected: the edit was not sent."));
          return;
        }
      }
      finish();
    });
    cancel.addEventListener("click", finish);
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        finish();
      } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }

  async remove(message) {
    const ok = await confirmDialog({title: gettext("Delete this message?"), text: message.body,
                                    ok: gettext("Delete")});
    if (ok && !this.send({type: "message.delete", id: message.id, ref: `delete:${message.id}`})) {
      this.onError(gettext("Not connected: the message was not deleted."));
    }
  }

  report(message) {
    const dialog = $("report-dialog");
    const form = $("report-form");
    const reason = $("report-reason");
    reason.value = "";
    form.onsubmit = async (event) => {
      if (event.submitter?.value !== "ok") return;
      event.preventDefault();
      const result = await api("POST", `/api/messages/${message.id}/report/`, {reason: reason.value});
      dialog.close();
      if (result.ok) toast(gettext("Thank you: a moderator will look at it."));
      else this.onError(detailOf(result));
    };
    openDialog(dialog);
  }

  async copyLink(message) {
    const url = `${location.origin}/rooms/${encodeURIComponent(this.room)}/#m${message.id}`;
    try {
      await navigator.clipboard.writeText(url);
      toast(gettext("Link copied."));
    } catch {
      window.prompt(gettext("Copy this link:"), url);
    }
  }
}
