/* The user's rooms as the server reports them (hello, room.joined, room.left, room.updated,
 * message.new, unread), shared by every view of a page: the room switcher, the room list, the
 * tab title's unread and mention counts and desktop notifications. A room's `mentions` counts
 * its unread messages that mention the user (0 when a server does not say). */
import {api} from "./util.js";

export class RoomsState {
  constructor({current = null, baseTitle = document.title} = {}) {
    this.rooms = new Map();      // slug -> {slug, name, kind, unread, mentions, topic, notify}
    this.current = current;      // the slug of the room this page shows, if any
    this.baseTitle = baseTitle;
    this.listeners = [];
  }

  onChange(listener) {
    this.listeners.push(listener);
  }

  changed() {
    this.updateTitle();
    for (const listener of this.listeners) listener(this);
  }

  reset(rooms) {
    this.rooms = new Map(rooms.map((room) => [room.slug, {...room, mentions: room.mentions || 0}]));
    this.changed();
  }

  has(slug) {
    return this.rooms.has(slug);
  }

  get(slug) {
    return this.rooms.get(slug);
  }

  /* A room the user was just subscribed to (an invitation, a first direct message, a join elsewhere). */
  async learn(slug) {
    if (this.rooms.has(slug)) return;
    const result = await api("GET", `/api/rooms/${encodeURIComponent(slug)}/`);
    if (!result.ok || this.rooms.has(slug)) return;
    const {name, kind, topic, unread, mentions} = result.data;
    this.rooms.set(slug, {slug, name, kind, topic, unread: unread || 0, mentions: mentions || 0});
    this.changed();
  }

  update(slug, fields) {
    const room = this.rooms.get(slug);
    if (!room) return;
    Object.assign(room, fields);
    this.changed();
  }

  remove(slug) {
    if (this.rooms.delete(slug)) this.changed();
  }

  /* A new message from someone else; `mention`: it names the user. */
  bump(slug, {mention = false} = {}) {
    const room = this.rooms.get(slug);
    if (!room) return;
    room.unread = (room.unread || 0) + 1;
    if (mention) room.mentions = (room.mentions || 0) + 1;
    this.changed();
  }

  total(field) {
    let total = 0;
    for (const room of this.rooms.values()) if (room.slug !== this.current) total += room[field] || 0;
    return total;
  }

  totalUnread() {
    return this.total("unread");
  }

  /* "(5) Room · Chat", and "(5 · @2) Room · Chat" when two of them mention the user. */
  updateTitle() {
    const unread = this.totalUnread();
    const mentions = this.total("mentions");
    const count = mentions > 0 ? `${unread} · @${mentions}` : String(unread);
    document.title = unread > 0 || mentions > 0 ? `(${count}) ${this.baseTitle}` : this.baseTitle;
  }

  sorted() {
    return Array.from(this.rooms.values()).sort((a, b) => a.name.localeCompare(b.name));
  }
}

// Desktop notifications: opt in with a button; `notification` frames alert (notify.js).

const NOTIFY_KEY = "chat-notify";

export function notificationsWanted() {
  return "Notification" in window && Notification.permission === "granted" && localStorage.getItem(NOTIFY_KEY) === "on";
}

export function setUpNotificationButton(button) {
  if (!button || !("Notification" in window)) return;
  const refresh = () => {
    button.hidden = notificationsWanted() || Notification.permission === "denied";
  };
  button.addEventListener("click", async () => {
    const permission = await Notification.requestPermission();
    if (permission === "granted") localStorage.setItem(NOTIFY_KEY, "on");
    refresh();
  });
  refresh();
}
