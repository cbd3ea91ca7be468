/* The message pane: messages in id order, once per id, grouped by author, with day separators,
 * a "New messages" line, avatars and local times; it follows new messages while the reader is
 * at the bottom, else counts them on a "N new messages ↓" button, and pages history in as the
 * reader scrolls (older above, newer below after a jump into the past). */
import {systemText} from "./system-text.js";
import {avatar, config, dayKey, dayLabel, el, fmt, fullDateTime, parseDate, shortTime} from "./util.js";

const GROUP_GAP_MS = 5 * 60 * 1000;
const PAGE = 50;
const EDGE_PX = 300;
const ME = (config()?.user?.username || "").toLowerCase();

/* Whether `message`, written by someone else, names the reader (or the whole room). */
export function mentionsMe(message) {
  if (!ME || message.deleted || message.author?.username.toLowerCase() === ME) return false;
  return Boolean(message.mentions_room) || (message.mentions || []).some((m) => m.username.toLowerCase() === ME);
}

/* The body: the server's rendering for user and emote messages (see fillBody), plain text otherwise. */
function fillBody(body, message) {
  const rich = message.kind !== "system" && typeof message.html === "string" && !message.deleted;
  body.classList.toggle("rich", rich);
  if (!rich) {
    body.textContent = message.deleted ? "" : (message.kind === "system" ? systemText(message.body) : message.body);
    return;
  }
  // The one place the client takes HTML: the server renders every message and passes it through an
  // allowlist sanitizer (chat/markup.py), and the page's CSP refuses inline scripts and styles anyway.
  body.innerHTML = message.html;
  markRendered(body, message);
}

/* In a rendered body: the reader's own mentions stand out, and wide code scrolls by keyboard too. */
export function markRendered(body, message) {
  for (const code of body.querySelectorAll("pre")) code.tabIndex = 0;
  for (const mention of body.querySelectorAll(".mention")) {
    const name = (mention.dataset.user || "").toLowerCase();
    mention.classList.toggle("mention-me", name === ME || (message.mentions_room && ["room", "all"].includes(name)));
  }
}

/* Functions (node, message) that add to a message's element each time it is filled: reactions, replies. */
export const messageHooks = [];

export function messageElement(message) {
  const body = el("div", {className: "body", dir: "auto"});
  body.dataset.deletedLabel = gettext("message deleted");
  const menuButton = el("button", {type: "button", className: "msg-menu-button", textContent: "⋯",
                                   "aria-haspopup": "menu"});
  const row = el("div", {className: "msg-row"},
    avatar(message.author ? message.author.username : ""),
    el("div", {className: "msg-main"},
      el("div", {className: "msg-head"}, el("span", {className: "author"}), el("time")),
      body,
      el("span", {className: "edited", textContent: gettext("(edited)")})),
    menuButton);
  const node = el("div", {className: "msg"},
    el("div", {className: "day", role: "separator", hidden: true}),
    el("div", {className: "new-line", role: "separator", hidden: true, textContent: gettext("New messages")}),
    row);
  fillMessage(node, message);
  return node;
}

export function fillMessage(node, message) {
  const author = message.author ? message.author.username : gettext("(gone)");
  node.className = `msg msg-${message.kind}` + (message.deleted ? " deleted" : "") + (mentionsMe(message) ? " mentions-me" : "")
    + (node.classList.contains("grouped") ? " grouped" : "") + (node.classList.contains("pending") ? " pending" : "");
  if (message.id) {
    node.dataset.id = String(message.id);
    node.id = `m${message.id}`;
  }
  node.querySelector(".author").textContent = author;
  const time = node.querySelector("time");
  const date = parseDate(message.created_at);
  if (date) {
    time.dateTime = message.created_at;
    time.textContent = shortTime(date);
    time.title = fullDateTime(date);
  }
  fillBody(node.querySelector(".body"), message);
  node.querySelector(".edited").hidden = !message.edited_at || message.deleted;
  node.querySelector(".msg-menu-button").setAttribute("aria-label",
    fmt(gettext("Actions for the message from %(author)s"), {author}));
  for (const hook of messageHooks) hook(node, message);
}

export class Timeline {
  /* fetchPage(params) -> {results, has_more | has_more_before, has_more_after} over REST. */
  /* skip(message) -> true keeps a message out of this timeline (a thread's reply). */
  constructor({list, pending, scroller, older, newer, jumpNew, me, lastReadId, fetchPage, onAtBottom, onError, skip}) {
    Object.assign(this, {list, pending, scroller, older, newer, jumpNew, me, lastReadId, fetchPage, onAtBottom, onError, skip});
    this.messages = new Map();      // id -> message
    this.nodes = new Map();         // id -> element
    this.oldestId = null;
    this.newestId = null;
    this.hasOlder = false;
    this.hasNewer = false;          // after a jump into the past: live messages wait in `skipped`
    this.skipped = [];
    this.unseen = 0;
    this.firstUnreadId = null;
    this.loading = false;
    this.scrolledMeanwhile = false;
    scroller.addEventListener("scroll", () => this.scrolled());
    older.addEventListener("click", () => this.loadOlder());
    newer.addEventListener("click", () => this.loadNewer());
    jumpNew.addEventListener("click", () => this.jumpToNewest());
  }

  // Reading position

  nearBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  toBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.unseen = 0;
    this.showJump();
  }

  scrolled() {
    if (this.loading) {
      this.scrolledMeanwhile = true;   // looked at again once the page is in: the reader may be at an edge
      return;
    }
    if (this.scroller.scrollTop < EDGE_PX) this.loadOlder();
    if (this.nearBottom()) {
      if (this.hasNewer) this.loadNewer();
      else {
        this.unseen = 0;
        this.showJump();
        this.onAtBottom();
      }
    }
  }

  showJump() {
    const show = this.unseen > 0 || this.hasNewer;
    this.jumpNew.hidden = !show;
    if (show) {
      this.jumpNew.textContent = this.unseen > 0
        ? fmt(ngettext("%(count)s new message ↓", "%(count)s new messages ↓", this.unseen), {count: this.unseen})
        : gettext("Jump to the newest messages ↓");
    }
  }

  // Content

  /* Replace everything with one page (the newest, or one around a message). */
  replace(messages, {hasOlder, hasNewer}) {
    this.list.setAttribute("aria-busy", "true");
    this.messages.clear();
    this.nodes.clear();
    this.list.replaceChildren();
    this.oldestId = this.newestId = null;
    this.hasOlder = hasOlder;
    this.hasNewer = hasNewer;
    this.skipped = [];
    this.insert(messages);
    this.findFirstUnread();
    this.decorate();
    this.list.removeAttribute("aria-busy");
    this.older.hidden = !this.hasOlder;
    this.newer.hidden = !this.hasNewer;
    this.showJump();
  }

  insert(messages) {
    for (const message of messages) {
      // A skipped message still moves the edges: the next page starts past it.
      this.oldestId = this.oldestId === null ? message.id : Math.min(this.oldestId, message.id);
      this.newestId = this.newestId === null ? message.id : Math.max(this.newestId, message.id);
      if (this.skip?.(message)) continue;
      this.messages.set(message.id, message);
      const known = this.nodes.get(message.id);
      if (known) {
        fillMessage(known, message);
        continue;
      }
      const node = messageElement(message);
      this.nodes.set(message.id, node);
      let next = null;
      if (this.newestId !== null && message.id < this.newestId) {
        next = Array.from(this.list.children).find((child) => Number(child.dataset.id) > message.id) || null;
      }
      this.list.insertBefore(node, next);
    }
  }

  /* Live messages and gap fills: in id order, once per id; follows them if the reader is at the bottom. */
  add(messages, {live = false} = {}) {
    if (this.hasNewer) {
      const later = messages.filter((m) => m.id > this.newestId);
      this.skipped.push(...later);
      this.unseen += later.filter((m) => m.author?.username !== this.me).length;
      messages = messages.filter((m) => m.id <= this.newestId);
      this.showJump();
    }
    if (messages.length === 0) return;
    const stick = this.nearBottom();
    if (live && this.firstUnreadId === null && document.visibilityState !== "visible") {
      this.firstUnreadId = messages.find((m) => m.author?.username !== this.me && m.kind !== "system")?.id ?? null;
    }
    this.insert(messages);
    this.decorate();
    if (stick) this.toBottom();
    else if (live) {
      this.unseen += messages.filter((m) => m.author?.username !== this.me).length;
      this.showJump();
    }
  }

  /* A message.updated: the whole message replaces the shown one, unless it is older (a lower seq). */
  update(message) {
    const shown = this.messages.get(message.id);
    if (!shown || (shown.seq ?? 0) > (message.seq ?? 0)) return;
    this.insert([message]);
  }

  markDeleted(id) {
    const message = this.messages.get(id);
    if (message) this.insert([{...message, deleted: true, body: "", html: "", edited_at: null}]);
  }

  get(id) {
    return this.messages.get(id);
  }

  /* The id of the first message whose bottom is inside the pane: where the reader is. */
  firstVisibleId() {
    const top = this.scroller.getBoundingClientRect().top;
    const node = Array.from(this.list.children).find((child) => child.getBoundingClientRect().bottom > top);
    return node ? Number(node.dataset.id) || null : null;
  }

  /* The user's newest message that can still be edited: for Up arrow in an empty composer. */
  lastOwn() {
    const ids = Array.from(this.messages.keys()).sort((a, b) => b - a);
    for (const id of ids) {
      const message = this.messages.get(id);
      if (message.author?.username === this.me && message.kind === "user" && !message.deleted) return message;
    }
    return null;
  }

  findFirstUnread() {
    if (this.firstUnreadId !== null || !this.lastReadId) return;
    const ids = Array.from(this.messages.keys()).sort((a, b) => a - b);
    this.firstUnreadId = ids.find((id) => {
      const m = this.messages.get(id);
      return id > this.lastReadId && m.author?.username !== this.me && m.kind !== "system";
    }) ?? null;
  }

  /* Day separators, author groups and the New messages line, from each message and the one before it. */
  decorate() {
    let previous = null;
    for (const node of this.list.children) {
      const message = this.messages.get(Number(node.dataset.id));
      if (!message) continue;
      const date = parseDate(message.created_at);
      const day = node.querySelector(".day");
      const startsDay = !previous || !date || dayKey(date) !== dayKey(parseDate(previous.created_at));
      day.hidden = !startsDay;
      if (startsDay && date) day.textContent = dayLabel(date);
      const firstUnread = message.id === this.firstUnreadId;
      node.querySelector(".new-line").hidden = !firstUnread;
      const grouped = !startsDay && !firstUnread && previous && message.kind !== "system" && previous.kind !== "system"
        && message.author && previous.author && message.author.id === previous.author.id
        && parseDate(message.created_at) - parseDate(previous.created_at) < GROUP_GAP_MS;
      node.classList.toggle("grouped", Boolean(grouped));
      previous = message;
    }
  }

  // Paging

  async loadOlder() {
    if (this.loading || !this.hasOlder || this.oldestId === null) return;
    this.loading = true;
    this.older.disabled = true;
    this.list.setAttribute("aria-busy", "true");
    try {
      const page = await this.fetchPage({before: this.oldestId, limit: PAGE});
      const fromBottom = this.scroller.scrollHeight - this.scroller.scrollTop;
      this.insert(page.results);
      this.findFirstUnread();
      this.decorate();
      this.scroller.scrollTop = this.scroller.scrollHeight - fromBottom;   // keep the reader's place
      this.hasOlder = page.has_more;
      this.older.hidden = !this.hasOlder;
    } catch (error) {
      this.onError(fmt(gettext("Could not load older messages (%(error)s)."), {error: error.message}));
    } finally {
      this.older.disabled = false;
      this.list.removeAttribute("aria-busy");
      this.loaded();
    }
  }

  async loadNewer() {
    if (this.loading || !this.hasNewer) return;
    this.loading = true;
    try {
      const page = await this.fetchPage({after: this.newestId, limit: PAGE});
      this.insert(page.results);
      this.hasNewer = page.has_more;
      if (!this.hasNewer) {
        this.insert(this.skipped);
        this.skipped = [];
      }
      this.decorate();
      this.newer.hidden = !this.hasNewer;
      this.showJump();
    } catch (error) {
      this.onError(fmt(gettext("Could not load newer messages (%(error)s)."), {error: error.message}));
    } finally {
      this.loaded();
    }
  }

  loaded() {
    this.loading = false;
    if (this.scrolledMeanwhile) {
      this.scrolledMeanwhile = false;
      this.scrolled();
    }
  }

  /* Show the page around message `id` and put it in view: a link to a message, or the first unread. */
  async showAround(id, {highlight = true} = {}) {
    if (!this.nodes.has(id)) {
      try {
        const page = await this.fetchPage({around: id, limit: PAGE});
        this.replace(page.results, {hasOlder: page.has_more_before, hasNewer: page.has_more_after});
      } catch (error) {
        this.onError(fmt(gettext("Could not load that message (%(error)s)."), {error: error.message}));
        return;
      }
    }
    const node = this.nodes.get(id) || Array.from(this.nodes.values()).find((n) => Number(n.dataset.id) > id);
    if (!node) return;
    node.scrollIntoView({block: "center"});
    if (highlight) {
      node.querySelector(".msg-row").classList.add("highlight");
      setTimeout(() => node.querySelector(".msg-row").classList.remove("highlight"), 4000);
    }
  }

  async jumpToNewest() {
    if (this.hasNewer) {
      try {
        const page = await this.fetchPage({limit: PAGE});
        const skipped = this.skipped;
        this.replace(page.results, {hasOlder: page.has_more, hasNewer: false});
        this.insert(skipped);
        this.decorate();
      } catch (error) {
        this.onError(fmt(gettext("Could not load newer messages (%(error)s)."), {error: error.message}));
        return;
      }
    }
    this.toBottom();
    this.onAtBottom();
  }

  /* The first unread message is out of view (above, or not loaded): "Jump to unread" can help. */
  unreadOutOfView() {
    if (this.firstUnreadId !== null) {
      const node = this.nodes.get(this.firstUnreadId);
      return node ? node.getBoundingClientRect().bottom < this.scroller.getBoundingClientRect().top : false;
    }
    return Boolean(this.lastReadId) && this.hasOlder && this.oldestId !== null && this.lastReadId + 1 < this.oldestId;
  }

  async jumpToUnread() {
    if (this.firstUnreadId !== null && this.nodes.has(this.firstUnreadId)) {
      return this.showAround(this.firstUnreadId, {highlight: false});
    }
    await this.showAround(this.lastReadId + 1, {highlight: false});
    this.findFirstUnread();
    this.decorate();
    if (this.firstUnreadId !== null) this.nodes.get(this.firstUnreadId)?.scrollIntoView({block: "start"});
  }
}
