/* The room's unanswered sends: each shows as a pending item until the server echoes its
 * client_id back, goes out again after every join, and returns to the composer when refused.
 * Its files (`attachments`, uploads.js) go with it, and back with its text.
 */
import {messageElement} from "./timeline.js";

export function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // randomUUID needs a secure context; plain-HTTP deployments fall back to random bytes.
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Outbox {
  constructor({room, user, timeline, attachments, send, onRefused}) {
    Object.assign(this, {room, user, timeline, attachments, send, onRefused});
    this.unacked = new Map();   // client_id -> body
  }

  add(body) {
    const clientId = newClientId();
    this.unacked.set(clientId, body);
    this.attachments.claim(clientId);
    const node = messageElement({id: 0, author: {id: this.user.id, username: this.user.username}, body, kind: "user",
                                 created_at: new Date().toISOString()});
    node.classList.add("pending");
    node.dataset.clientId = clientId;
    node.removeAttribute("id");
    node.querySelector("time").textContent = gettext("sending…");
    node.querySelector(".msg-menu-button").hidden = true;
    this.timeline.pending.append(node);
    if (this.timeline.hasNewer) this.timeline.jumpToNewest();
    else this.timeline.toBottom();
    this.transmit(clientId);   // offline: it goes out after the next join
  }

  transmit(clientId) {
    const body = this.unacked.get(clientId);
    if (body === undefined) return;
    this.send({type: "message.send", room: this.room, body, client_id: clientId, ref: clientId,
               ...this.attachments.fields(clientId)});
  }

  resendAll() {
    this.unacked.forEach((_, clientId) => this.transmit(clientId));
  }

  /* True when the message answers one of our sends (its pending item goes). */
  acknowledge(message) {
    if (!message.client_id || !this.unacked.delete(message.client_id)) return false;
    this.attachments.acknowledged(message.client_id);
    this.pendingItem(message.client_id)?.remove();
    return true;
  }

  /* An error frame for one of our sends: a busy server gets it again later; a refusal hands the
   * text back. False when the frame is not about our sends. */
  failed(frame) {
    if (!frame.ref || !this.unacked.has(frame.ref)) return false;
    if (frame.code === "rate_limited" || frame.code === "unavailable") {
      setTimeout(() => this.transmit(frame.ref), (frame.retry_after || 1) * 1000);
      return true;
    }
    const body = this.unacked.get(frame.ref);
    this.unacked.delete(frame.ref);
    this.pendingItem(frame.ref)?.remove();
    this.attachments.restore(frame.ref);
    this.onRefused(body, frame.detail);
    return true;
  }

  pendingItem(clientId) {
    return Array.from(this.timeline.pending.children).find((node) => node.dataset.clientId === clientId);
  }
}
