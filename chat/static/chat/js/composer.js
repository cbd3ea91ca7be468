/* The composer: Enter sends, Shift+Enter is a new line, a draft per room survives a reload,
 * Up arrow in an empty box edits one's last message, an over-long text says so before it is
 * sent, and its state (muted until a time, locked, removed) is shown instead of a dead box. */
import {$, fmt, fullDateTime, parseDate} from "./util.js";

const TYPING_EVERY_MS = 2000;   // the server relays at most one typing frame per 2 s anyway

export class Composer {
  constructor({room, maxBody, isStaff, onSend, onTyping, onEditLast, attachments = null}) {
    Object.assign(this, {room, maxBody, isStaff, onSend, onTyping, onEditLast, attachments});
    this.form = $("composer");
    this.input = $("body");
    this.button = $("send");
    this.count = $("body-count");
    this.banner = $("composer-state");
    this.draftKey = `chat-draft:${room}`;
    this.locked = false;
    this.mutedUntil = null;
    this.muteTimer = null;
    this.closedReason = null;
    this.lastTyping = 0;
    if (!this.form) return;
    this.input.value = this.loadDraft();
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (event) => this.keydown(event));
    this.input.addEventListener("input", () => this.changed());
    this.refresh();
  }

  loadDraft() {
    try {
      return localStorage.getItem(this.draftKey) || "";
    } catch {
      return "";
    }
  }

  saveDraft() {
    try {
      if (this.input.value) localStorage.setItem(this.draftKey, this.input.value);
      else localStorage.removeItem(this.draftKey);
    } catch {
      // Storage refused: the draft lives as long as the page.
    }
  }

  get length() {
    return Array.from(this.input.value).length;   // characters, as the server counts them
  }

  changed() {
    this.saveDraft();
    this.refresh();
    const now = Date.now();
    if (this.input.value.trim() && now - this.lastTyping >= TYPING_EVERY_MS && this.onTyping()) this.lastTyping = now;
  }

  keydown(event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      this.form.requestSubmit();
    } else if (event.key === "ArrowUp" && !this.input.value && !event.isComposing) {
      event.preventDefault();
      this.onEditLast();
    }
  }

  submit() {
    const body = this.input.value;
    // With files (uploads.js) the text may be empty; while one still uploads, nothing goes.
    const files = this.attachments;
    if (files && files.busy()) return;
    if ((!body.trim() && !(files && files.ready())) || !this.open() || this.length > this.maxBody) return;
    this.onSend(body);
    this.input.value = "";
    this.saveDraft();
    this.refresh();
    this.input.focus();
  }

  /* A refused send: its text comes back to the box, before anything typed since. */
  restore(body) {
    if (!this.form) return;
    this.input.value = this.input.value ? `${body}\n${this.input.value}` : body;
    this.saveDraft();
    this.refresh();
  }

  open() {
    return !this.closedReason && !this.muted() && !(this.locked && !this.isStaff);
  }

  muted() {
    return this.mutedUntil !== null && this.mutedUntil > new Date();
  }

  setLocked(locked) {
    this.locked = locked;
    this.refresh();
  }

  setMutedUntil(iso) {
    clearTimeout(this.muteTimer);
    this.mutedUntil = iso ? parseDate(iso) : null;
    if (this.muted()) {
      // setTimeout holds at most 2^31-1 ms; a longer mute re-checks then.
      this.muteTimer = setTimeout(() => this.setMutedUntil(this.muted() ? iso : null),
                                  Math.min(this.mutedUntil - new Date() + 500, 2 ** 31 - 1));
    }
    this.refresh();
  }

  close(reason) {
    this.closedReason = reason;
    this.refresh();
  }

  refresh() {
    if (!this.form) return;
    let state = "";
    if (this.closedReason) state = this.closedReason;
    else if (this.muted()) {
      state = fmt(gettext("You are muted in this room until %(time)s."), {time: fullDateTime(this.mutedUntil)});
    } else if (this.locked && !this.isStaff) state = gettext("This room is locked: only staff can post.");
    else if (this.locked) state = gettext("This room is locked; as staff you can still post.");
    this.banner.textContent = state;
    this.banner.hidden = !state;
    const open = this.open();
    this.input.disabled = !open;
    const over = this.length - this.maxBody;
    this.button.disabled = !open || over > 0 || Boolean(this.attachments && this.attachments.busy());
    this.count.classList.toggle("over", over > 0);
    this.count.textContent = over > 0
      ? fmt(ngettext("%(count)s character over the limit of %(max)s: shorten it to send.",
                     "%(count)s characters over the limit of %(max)s: shorten it to send.", over),
            {count: over, max: this.maxBody})
      : (this.length > this.maxBody * 0.9
        ? fmt(gettext("%(left)s characters left"), {left: this.maxBody - this.length}) : "");
  }
}
