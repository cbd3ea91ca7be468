/* Alerts: a desktop notification for each `notification` frame (the server decides who is
 * alerted, following each member's setting), and the room header's setting itself
 * (GET/PATCH /api/rooms/<slug>/membership/ {"notify"}). */
import {notificationsWanted} from "./rooms-state.js";
import {$, api, detailOf, fmt, toast} from "./util.js";

const BODY_CHARS = 140;

function title(reason, author, roomName) {
  if (reason === "direct") return author;
  const text = reason === "room_mention" ? gettext("%(author)s mentioned everyone in %(room)s")
    : gettext("%(author)s mentioned you in %(room)s");
  return fmt(text, {author, room: roomName});
}

/* One desktop notification per frame, unless the user is looking at that room; a click opens
 * the room at the message (in this page when it is the room shown). */
export function notifyFrame(rooms, frame, {current = null, show = null} = {}) {
  if (frame.room === current && document.visibilityState === "visible") return;
  if (!notificationsWanted()) return;
  // `message` is the whole message; a bare id is accepted too.
  const message = typeof frame.message === "object" && frame.message ? frame.message : {id: frame.message};
  const author = message.author?.username || gettext("(gone)");
  const roomName = rooms.get(frame.room)?.name || frame.room;
  const body = Array.from(message.body || "").slice(0, BODY_CHARS).join("");
  const notification = new Notification(title(frame.reason, author, roomName), {body, tag: `m${message.id}`});
  notification.addEventListener("click", () => {
    window.focus();
    if (frame.room === current && show) show(message.id);
    else location.assign(`/rooms/${encodeURIComponent(frame.room)}/#m${message.id}`);
  });
}

/* The header's "Notify me" select: loaded from the membership, saved on change. */
export async function wireNotifySetting(room, onError) {
  const select = $("notify-setting");
  if (!select) return;
  const url = `/api/rooms/${encodeURIComponent(room)}/membership/`;
  let saved = select.value;
  select.addEventListener("change", async () => {
    select.disabled = true;
    const result = await api("PATCH", url, {notify: select.value});
    select.disabled = false;
    if (result.ok) {
      saved = result.data?.notify || select.value;
      toast(gettext("Notification setting saved."));
    } else {
      select.value = saved;
      onError(detailOf(result));
    }
  });
  const result = await api("GET", url);
  if (result.ok && result.data?.notify) select.value = saved = result.data.notify;
}
