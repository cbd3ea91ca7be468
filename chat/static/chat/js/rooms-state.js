/* The user's rooms as the server reports them (hello, room.joined, room.left, room.updated,
 * message.new, unread), shared by every view of a page: the room switcher, the room list, the
 * tab title's unread count and desktop notifications. */
import {api} from "./util.js";

export class RoomsState {
  constructor({current = null, baseTitle = document.title} = {}) {
    this.rooms = new Map();      // slug -> {slug, name, kind, unread, topic}
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
    this.rooms = new Map(rooms.map((room) => [room.slug, {...room}]));
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
    const {name, kind, topic, unread} = result.data;
    this.rooms.set(slug, {slug, name, kind, topic, unread: unread || 0});
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

  bump(slug) {
    const room = this.rooms.get(slug);
    if (!room) return;
    room.unread = (room.unread || 0) + 1;
    this.changed();
  }

  totalUnread() {
    let total = 0;
    for (const room of this.rooms.values()) if (room.slug !== this.current) total += room.unread || 0;
    return total;
  }

  updateTitle() {
    const total = this.totalUnread();
    document.title = total > 0 ? `(${total}) ${this.baseTitle}` : this.baseTitle;
  }

  sorted() {
    return Array.from(this.rooms.values()).sort((a, b) => a.name.localeCompare(b.name));
  }
}

// Desktop notifications: opt in with a button; direct messages (and mentions, later) alert.

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

/* Alert for a direct message from someone else, unless the user is looking at it. */
export function notifyMessage(rooms, frame, me) {
  const room = rooms.get(frame.room);
  const message = frame.message;
  // A first direct message may come before its room is known here; direct slugs start with dm-.
  const direct = room ? room.kind === "direct" : frame.room.startsWith("dm-");
  if (!direct || !message.author || message.author.username === me) return;
  if (frame.room === rooms.current && document.visibilityState === "visible") return;
  if (!notificationsWanted()) return;
  const notification = new Notification(message.author.username, {body: message.body, tag: `m${message.id}`});
  notification.addEventListener("click", () => {
    window.focus();
    location.assign(`/rooms/${encodeURIComponent(frame.room)}/#m${message.id}`);
  });
}
