/* Threads, as in Slack: a reply lives in its thread, not in the room's timeline; the thread's
 * root shows "N replies" under it, and that line opens the thread panel (a side panel on a
 * desktop, a full-screen sheet on a phone) with the root, its replies and a composer of its own.
 *
 * The panel pages replies in ascending order from GET /api/messages/<id>/thread/ and follows
 * message.new frames whose `thread` is its root once it has reached the newest reply. A reply
 * answers the root unless the reader chose a reply to answer ("Reply" on it); a reply that
 * answers another reply shows a quote of it. Sends carry a client_id and are resent after a
 * reconnect until the server echoes them, like the room's composer. */
import {fillMessage, messageElement} from "./timeline.js";
import {$, api, detailOf, el, fmt} from "./util.js";

const PAGE = 50;
const QUOTE_CHARS = 120;

export function firstLine(message) {
  if (message.deleted) return gettext("message deleted");
  const line = message.body.split("\n").find((text) => text.trim()) || "";
  return line.length > QUOTE_CHARS ? `${line.slice(0, QUOTE_CHARS)}…` : line;
}

export class Threads {
  /* send(frame) -> bool puts a frame on the socket; lookup(id) finds a message of the timeline. */
  constructor({room, me, send, lookup, newClientId, onError}) {
    Object.assign(this, {room, me, send, lookup, newClientId, onError});
    this.page = document.querySelector(".room-page");
    this.panel = $("thread-panel");
    this.rootBox = $("thread-root");
    this.list = $("thread-replies");
    this.more = $("thread-more");
    this.form = $("thread-composer");
    this.input = $("thread-body");
    this.replying = $("thread-replying");
    this.rootId = null;
    this.root = null;
    this.messages = new Map();      // id -> reply shown in the panel
    this.hasMore = false;
    this.answering = null;          // the reply being answered, else the root
    this.unacked = new Map();       // client_id -> {body, reply_to, thread}
    this.opener = null;
    this.onMenu = () => {};         // (node, button): the message menu of actions.js, set by room.js
    if (!this.panel) return;
    $("thread-close").addEventListener("click", () => this.close());
    this.more.addEventListener("click", () => this.loadMore());
    this.panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !event.defaultPrevented) this.close();
    });
    this.panel.addEventListener("click", (event) => {
      const answer = event.target.closest(".reply-to-button");
      const menu = event.target.closest(".msg-menu-button");
      if (answer) this.answer(Number(answer.closest(".msg").dataset.id));
      else if (menu) this.onMenu(menu.closest(".msg"), menu);
    });
    this.replying.querySelector("button").addEventListener("click", () => this.answer(null));
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.form.requestSubmit();
      }
    });
    document.addEventListener("click", (event) => {
      const replies = event.target.closest(".replies-link");
      const quote = event.target.closest(".quote");
      if (replies) this.open(Number(replies.closest(".msg").dataset.id), replies);
      else if (quote) this.showQuoted(Number(quote.dataset.id));
    });
  }

  get(id) {
    return this.messages.get(id) || (id === this.rootId ? this.root : null);
  }

  /* A fillMessage hook: "N replies" under a root in the timeline, a quote above a reply that
   * answers anything but its thread's root, and "Reply" on each reply in the panel. */
  render(node, message) {
    const main = node.querySelector(".msg-main");
    const inPanel = node.dataset.place === "thread";
    let quote = node.querySelector(".quote");
    const quoted = message.reply_to && message.reply_to !== message.thread && !message.deleted;
    if (quoted) {
      const target = this.get(message.reply_to) || this.lookup(message.reply_to);
      if (!quote) {
        quote = el("button", {type: "button", className: "quote"});
        node.querySelector(".body").before(quote);
      }
      quote.dataset.id = String(message.reply_to);
      quote.replaceChildren(
        el("span", {className: "visually-hidden", textContent: gettext("In reply to")}),
        target ? el("span", {className: "quote-author", textContent: target.author?.username || gettext("(gone)")}) : null,
        el("span", {className: "quote-text", dir: "auto", textContent: target ? firstLine(target) : gettext("an earlier message")}));
    } else quote?.remove();

    let replies = node.querySelector(".replies-link");
    if (message.reply_count > 0 && !inPanel) {
      replies ||= el("button", {type: "button", className: "replies-link link", "aria-controls": "thread-panel"});
      main.append(replies);   // last, after the reactions, however they came
      replies.textContent = fmt(ngettext("%(count)s reply", "%(count)s replies", message.reply_count),
                                {count: message.reply_count});
    } else replies?.remove();

    const canAnswer = inPanel && message.thread && !message.deleted && message.id;
    let answer = node.querySelector(".reply-to-button");
    if (canAnswer) {
      answer ||= el("button", {type: "button", className: "reply-to-button link", textContent: gettext("Reply"),
                               "aria-label": fmt(gettext("Reply to %(author)s"), {author: message.author?.username || ""})});
      main.append(answer);
    } else answer?.remove();
  }

  // The panel

  async open(rootId, opener = null) {
    if (!this.panel) return;
    this.opener = opener || document.activeElement;
    if (this.rootId !== rootId) {
      this.rootId = rootId;
      this.root = null;
      this.messages.clear();
      this.rootBox.replaceChildren();
      this.list.replaceChildren();
      this.answer(null);
      this.hasMore = false;
      this.more.hidden = true;
      this.list.setAttribute("aria-busy", "true");
      const known = this.lookup(rootId);
      if (known) this.setRoot(known);   // at once; the thread's page follows
    }
    this.page.classList.add("thread-open");
    this.panel.hidden = false;
    this.input.focus();
    await this.fetch();
  }

  close() {
    if (!this.panel || this.panel.hidden) return;
    this.panel.hidden = true;
    this.page.classList.remove("thread-open");
    const opener = this.opener;
    this.opener = null;
    if (opener?.isConnected) opener.focus();
  }

  async fetch(after = null) {
    const rootId = this.rootId;
    const params = new URLSearchParams({limit: PAGE});
    if (after) params.set("after", after);
    const result = await api("GET", `/api/messages/${rootId}/thread/?${params}`);
    if (rootId !== this.rootId) return;   // another thread was opened meanwhile
    this.list.removeAttribute("aria-busy");
    if (!result.ok) {
      this.onError(fmt(gettext("Could not load the thread (%(error)s)."), {error: detailOf(result)}));
      return;
    }
    this.setRoot(result.data.root);
    this.insert(result.data.results);
    this.hasMore = result.data.has_more;
    this.more.hidden = !this.hasMore;
  }

  loadMore() {
    const ids = Array.from(this.messages.keys());
    return this.fetch(ids.length ? Math.max(...ids) : null);
  }

  setRoot(message) {
    this.root = message;
    let node = this.rootBox.firstElementChild;
    if (!node) {
      node = this.element(message);
      this.rootBox.append(node);
    } else this.fill(node, message);
    $("thread-count").textContent = fmt(ngettext("%(count)s reply", "%(count)s replies", message.reply_count),
                                        {count: message.reply_count});
  }

  element(message) {
    const node = messageElement(message);
    this.fill(node, message);
    return node;
  }

  /* Nodes in the panel are copies: the timeline's node keeps the id the #m<id> links point at. */
  fill(node, message) {
    node.dataset.place = "thread";
    fillMessage(node, message);
    node.removeAttribute("id");
  }

  insert(messages) {
    for (const message of messages) {
      if (message.thread !== this.rootId) continue;
      const known = this.list.querySelector(`.msg[data-id="${message.id}"]`);
      this.messages.set(message.id, message);
      if (known) {
        this.fill(known, message);
        continue;
      }
      const node = this.element(message);
      const next = Array.from(this.list.children).find((child) => Number(child.dataset.id) > message.id) || null;
      this.list.insertBefore(node, next);
    }
  }

  // Frames, from room.js

  /* message.new of a reply: acknowledge one's own send, show it if the panel is on its thread. */
  received(message) {
    if (message.client_id && this.unacked.delete(message.client_id)) {
      this.list.querySelector(`.pending[data-client-id="${CSS.escape(message.client_id)}"]`)?.remove();
    }
    if (message.thread !== this.rootId || this.hasMore) return;
    const stick = this.nearBottom();
    this.insert([message]);
    if (stick) this.toBottom();
  }

  /* message.updated (or deleted) of any message: the root's count, a reply's edit or reactions. */
  updated(message) {
    if (message.id === this.rootId) this.setRoot(message);
    else if (this.messages.has(message.id)) {
      this.insert([message]);
      const quoting = Array.from(this.messages.values()).filter((reply) => reply.reply_to === message.id);
      this.insert(quoting);   // their quotes show the new text
    }
  }

  deleted(id) {
    const message = this.get(id);
    if (message) this.updated({...message, deleted: true, body: "", html: "", reactions: [], edited_at: null});
  }

  /* An error frame: true when it answered one of the panel's sends (then handled here). */
  failed(frame) {
    const clientId = frame.ref?.startsWith("thread:") ? frame.ref.slice("thread:".length) : null;
    if (!clientId || !this.unacked.has(clientId)) return false;
    if (frame.code === "rate_limited" || frame.code === "unavailable") {
      setTimeout(() => this.transmit(clientId), (frame.retry_after || 1) * 1000);
      return true;
    }
    const {body} = this.unacked.get(clientId);
    this.unacked.delete(clientId);
    this.list.querySelector(`.pending[data-client-id="${CSS.escape(clientId)}"]`)?.remove();
    this.input.value = this.input.value ? `${body}\n${this.input.value}` : body;
    this.onError(fmt(gettext("Not sent: %(reason)s Your text is back in the box."), {reason: frame.detail}));
    return true;
  }

  /* After a reconnect: every send not yet echoed goes out again with its client_id. */
  resend() {
    this.unacked.forEach((_, clientId) => this.transmit(clientId));
  }

  // Sending

  answer(id) {
    const target = id ? this.get(id) : null;
    this.answering = target ? id : null;
    this.replying.hidden = !target;
    if (target) {
      this.replying.querySelector("span").textContent = fmt(gettext("Replying to %(author)s: %(text)s"),
        {author: target.author?.username || gettext("(gone)"), text: firstLine(target)});
      this.input.focus();
    }
  }

  submit() {
    const body = this.input.value;
    if (!body.trim() || !this.rootId) return;
    const clientId = this.newClientId();
    this.unacked.set(clientId, {body, reply_to: this.answering || this.rootId});
    const node = messageElement({id: 0, author: {username: this.me}, body, kind: "user", created_at: new Date().toISOString(),
                                 reply_to: this.answering, thread: this.rootId, reactions: []});
    node.dataset.place = "thread";
    fillMessage(node, {id: 0, author: {username: this.me}, body, kind: "user", created_at: new Date().toISOString(),
                       reply_to: this.answering, thread: this.rootId, reactions: []});
    node.classList.add("pending");
    node.dataset.clientId = clientId;
    node.removeAttribute("id");
    node.querySelector("time").textContent = gettext("sending…");
    node.querySelector(".msg-menu-button").hidden = true;
    this.list.append(node);
    this.toBottom();
    this.input.value = "";
    this.answer(null);
    if (!this.transmit(clientId)) this.onError(gettext("Not connected: the reply goes out when the connection is back."));
  }

  transmit(clientId) {
    const pending = this.unacked.get(clientId);
    return pending && this.send({type: "message.send", room: this.room, body: pending.body, reply_to: pending.reply_to,
                                 client_id: clientId, ref: `thread:${clientId}`});
  }

  nearBottom() {
    const s = $("thread-scroller");
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  toBottom() {
    const s = $("thread-scroller");
    s.scrollTop = s.scrollHeight;
  }

  /* A link to a message (#m<id>) that is a reply opens its thread. False for any other message. */
  async follow(id) {
    const result = await api("GET", `/api/rooms/${encodeURIComponent(this.room)}/messages/?around=${id}&limit=1`);
    const message = result.ok ? result.data.results.find((m) => m.id === id) : null;
    if (!message?.thread) return false;
    await this.open(message.thread);
    this.showQuoted(id);
    return true;
  }

  /* A quote's click: the quoted message in the panel, else the room's link to it. */
  showQuoted(id) {
    const node = this.list.querySelector(`.msg[data-id="${id}"]`) || this.rootBox.querySelector(`.msg[data-id="${id}"]`);
    if (!node) {
      location.hash = `#m${id}`;
      return;
    }
    node.scrollIntoView({block: "center"});
    const row = node.querySelector(".msg-row");
    row.classList.add("highlight");
    setTimeout(() => row.classList.remove("highlight"), 4000);
  }
}
