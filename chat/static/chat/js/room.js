/* The room page: one WebSocket at /ws/chat/ (session cookie) for every room of the user, this
 * room's timeline, composer, members and actions, and the room switcher.
 *
 * `handlers` has one entry per server frame type of chat/protocol.py. Resuming follows
 * docs/guarantees.md: re-join with `since` = the highest id and `changes_since` = the highest
 * seq received after the last room.joined, fetch a room.gap over REST (a gap of changes reloads
 * the view), resend every unanswered send with its client_id, and order and de-duplicate by id.
 * Message text is set with textContent; only the server's sanitized `html` goes in as HTML.
 */
import {MessageActions} from "./actions.js";
import {Composer} from "./composer.js";
import {Connection, statusView} from "./connection.js";
import {fillGap, reloadView} from "./gaps.js";
import {Members, suggestUsers, wireInvite, wireLeave, wirePanels, wireSettings} from "./members.js";
import {MentionSuggestions, wireFormattingHelp} from "./mentions.js";
import {notifyFrame, wireNotifySetting} from "./notify.js";
import {Outbox, newClientId} from "./outbox.js";
import {Reactions} from "./reactions.js";
import {RoomsState, setUpNotificationButton} from "./rooms-state.js";
import {renderSwitcher} from "./switcher.js";
import {Threads} from "./thread.js";
import {Timeline, mentionsMe, messageHooks} from "./timeline.js";
import {Typists} from "./typing.js";
import {Uploads, renderAttachments} from "./uploads.js";
import {$, api, config as readConfig, el, fmt, staffNotice} from "./util.js";

const config = readConfig();
const ROOM = config.room.slug;
const ME = config.user.username;

const LEFT_REASONS = {
  left: gettext("You left this room."),
  kicked: gettext("You were removed from this room."),
  banned: gettext("You are banned from this room."),
  gone: gettext("You are no longer a member of this room."),
};
const FINAL_REASONS = {
  4403: gettext("You no longer have access to this room."),
  4404: gettext("This room does not exist."),
  4410: gettext("This room has been archived."),
};

const ui = {
  notice: $("notice"), notices: $("notices"), name: $("room-name"), topic: $("room-topic"), locked: $("room-locked"),
  typing: $("typing"), jumpUnread: $("jump-unread"), nav: $("room-nav"),
};

const room = {...config.room};
const state = {
  joined: false,           // room.joined arrived on this connection: sends may go out
  stopped: false,          // removed, banned, archived: no more reconnects
  highestId: 0,
  resumeId: 0,             // the highest id received after this connection's room.joined
  resumeSeq: 0,            // the same for the room's change sequence (`seq`): resumes edits and deletions
  online: new Set(),
  lastReadSent: config.lastReadId || 0,
  readTimer: null,
};

const rooms = new RoomsState({current: ROOM, baseTitle: document.title});

// Notices: connection problems and refusals in one line; staff notices each with a dismiss button.

function showNotice(text, level = "warning") {
  ui.notice.replaceChildren();
  if (text) ui.notice.append(el("span", {className: "notice-text", textContent: text}), dismissButton(ui.notice));
  ui.notice.className = `notice ${level}`;
  ui.notice.hidden = !text;
}

function dismissButton(box) {
  const button = el("button", {type: "button", className: "dismiss", textContent: "×", "aria-label": gettext("Dismiss")});
  button.addEventListener("click", () => { box.hidden = true; });
  return button;
}

// The timeline, its actions and the composer

const timeline = new Timeline({
  list: $("messages"), pending: $("pending"), scroller: $("scroller"), older: $("load-older"), newer: $("load-newer"),
  jumpNew: $("jump-new"), me: ME, lastReadId: config.lastReadId, fetchPage, onAtBottom: () => markRead(),
  onError: (text) => showNotice(text), skip: (message) => Boolean(message.thread),
});

// Reactions and threads (reactions.js, thread.js): replies live in the thread panel, not the timeline.
const threads = new Threads({room: ROOM, me: ME, send: (frame) => send(frame), lookup: (id) => timeline.get(id),
                             newClientId, onError: (text) => showNotice(text)});
const reactions = new Reactions({me: ME, send: (frame) => send(frame), get: (id) => timeline.get(id) || threads.get(id),
                                 onError: (text) => showNotice(text)});
messageHooks.push((node, message) => reactions.render(node, message), (node, message) => threads.render(node, message),
                  renderAttachments);

const actions = new MessageActions({timeline, room: ROOM, me: ME, canModerate: config.canModerate,
                                    send: (frame) => send(frame), onError: (text) => showNotice(text),
                                    get: (id) => timeline.get(id) || threads.get(id),
                                    more: (message) => [[gettext("Add reaction"), () => reactions.openPicker(message.id)],
                                                        [gettext("Reply in thread"), () => threads.open(message.thread || message.id)]]});
threads.onMenu = (node, button) => actions.open(node, button);

const uploads = new Uploads({room: ROOM, form: $("composer"), input: $("body"), onError: (text) => showNotice(text),
                             onChange: () => composer.refresh()});
const composer = new Composer({
  room: ROOM, maxBody: config.maxBody, isStaff: config.user.isStaff,
  onSend: (body) => outbox.add(body), attachments: uploads,
  onTyping: () => send({type: "typing", room: ROOM}),
  onEditLast: () => {
    const message = timeline.lastOwn();
    if (message) actions.startEdit(message.id);
  },
});

const outbox = new Outbox({
  room: ROOM, user: {id: config.user.id, username: ME}, timeline, attachments: uploads, send: (frame) => send(frame),
  onRefused: (body, detail) => {
    if (body !== undefined) composer.restore(body);
    showNotice(fmt(gettext("Not sent: %(reason)s Your text is back in the box."), {reason: detail}));
  },
});
const typists = new Typists(ui.typing);

const members = new Members({room: ROOM, me: ME, online: state.online, onError: (text) => showNotice(text)});
new MentionSuggestions({input: $("body"), form: $("composer"), me: ME,
                        members: () => members.members.map((m) => m.user.username)});

async function fetchPage(params) {
  const result = await api("GET", `${config.historyUrl}?${new URLSearchParams(params)}`);
  if (result.status === 401 || result.status === 403 && !result.data) location.assign(config.loginUrl);
  if (!result.ok) throw new Error(result.data?.detail || `HTTP ${result.status}`);
  return result.data;
}

function gapFailed(error) {
  showNotice(fmt(gettext("Some messages could not be loaded (%(error)s); reload the page."), {error: error.message}));
}

/* The resume cursors: ids and seqs count only after this connection's room.joined (see above). */
function seen(message) {
  state.highestId = Math.max(state.highestId, message.id);
  if (!state.joined) return;
  state.resumeId = Math.max(state.resumeId, message.id);
  if (message.seq) state.resumeSeq = Math.max(state.resumeSeq, message.seq);
}

function renderHeader() {
  ui.name.textContent = room.name;
  ui.topic.textContent = room.topic;
  ui.locked.hidden = !room.locked;
  composer.setLocked(room.locked);
  rooms.baseTitle = fmt(gettext("%(room)s · Chat"), {room: room.name});
  rooms.updateTitle();
}

function updateJumpUnread() {
  if (ui.jumpUnread) ui.jumpUnread.hidden = !timeline.unreadOutOfView();
}

// Sending

function send(frame) {
  return state.joined && connection.send(frame);
}

function markRead() {
  clearTimeout(state.readTimer);
  state.readTimer = setTimeout(() => {
    updateJumpUnread();
    if (document.visibilityState !== "visible" || !timeline.nearBottom() || timeline.hasNewer) return;
    if (state.highestId <= state.lastReadSent) return;
    if (send({type: "read", room: ROOM, message_id: state.highestId})) state.lastReadSent = state.highestId;
  }, 300);
}

// Server frames, one handler per type of chat/protocol.py

const handlers = {
  "hello"(frame) {
    rooms.reset(frame.rooms.map((r) => (r.slug === ROOM ? {...r, unread: 0, mentions: 0} : r)));
    if (frame.limits) composer.maxBody = frame.limits.max_body;
    connection.established();
    // The page was opened as a member: if the room is not among the user's rooms now, they were
    // removed (or left) while this page was reconnecting. Joining again would undo that.
    if (!frame.rooms.some((r) => r.slug === ROOM)) return removed("gone");
    connection.send({type: "join", room: ROOM, since: state.resumeId, changes_since: state.resumeSeq, ref: "join"});
  },
  "room.joined"(frame) {
    if (frame.room !== ROOM) {
      rooms.learn(frame.room);   // an invitation, a first direct message, a join in another tab
      return;
    }
    state.joined = true;
    showNotice("");
    state.online.clear();
    frame.online.forEach((name) => state.online.add(name));
    members.render();
    members.reload();
    outbox.resendAll();
    threads.resend();
    markRead();
  },
  "room.left"(frame) {
    if (frame.room === ROOM) removed(frame.reason || "left");
    else rooms.remove(frame.room);
  },
  "room.gap"(frame) {
    if (frame.room !== ROOM) return;
    const work = frame.changes ? reloadView(timeline, fetchPage).then((messages) => messages.forEach(seen))
      : fillGap(timeline, fetchPage, frame.after, frame.before);
    work.catch(gapFailed);
  },
  "room.updated"(frame) {
    rooms.update(frame.room, {name: frame.name, topic: frame.topic});
    if (frame.room !== ROOM) {
      if (frame.archived) rooms.remove(frame.room);
      return;
    }
    if (frame.archived) return stop(FINAL_REASONS[4410]);
    Object.assign(room, {name: frame.name, topic: frame.topic, locked: frame.locked});
    renderHeader();
  },
  "message.new"(frame) {
    const message = frame.message;
    if (frame.room !== ROOM) {
      if (message.author?.username !== ME) {
        if (rooms.has(frame.room)) rooms.bump(frame.room, {mention: mentionsMe(message)});
        else rooms.learn(frame.room);
      }
      return;
    }
    seen(message);
    const mine = outbox.acknowledge(message);
    if (message.author) typists.stop(message.author.username);
    if (message.thread) threads.received(message);
    else timeline.add([message], {live: true});
    if (mine) timeline.toBottom();
    markRead();
  },
  "message.updated"(frame) {
    if (frame.room !== ROOM) return;
    if (state.joined && frame.message.seq) state.resumeSeq = Math.max(state.resumeSeq, frame.message.seq);
    timeline.update(frame.message);
    threads.updated(frame.message);
  },
  "message.deleted"(frame) {
    if (frame.room !== ROOM) return;
    timeline.markDeleted(frame.id);
    threads.deleted(frame.id);
  },
  "presence"(frame) {
    if (frame.room !== ROOM) return;
    if (frame.status === "online") state.online.add(frame.user.username);
    else state.online.delete(frame.user.username);
    members.render();
  },
  "member.joined"(frame) {
    if (frame.room === ROOM) members.reload();
  },
  "member.left"(frame) {
    if (frame.room !== ROOM || frame.user.username === ME) return;
    state.online.delete(frame.user.username);
    members.reload();
  },
  "typing"(frame) {
    const name = frame.user.username;
    if (frame.room !== ROOM || name === ME) return;
    typists.typing(name);
  },
  "membership.updated"(frame) {
    if (frame.room === ROOM) composer.setMutedUntil(frame.muted_until);
  },
  "unread"(frame) {
    const here = frame.room === ROOM;
    rooms.update(frame.room, {unread: here ? 0 : frame.count, mentions: here ? 0 : frame.mentions || 0});
  },
  "notification"(frame) {
    notifyFrame(rooms, frame, {current: ROOM, show: (id) => timeline.showAround(id)});
  },
  "notice"(frame) {
    if (!frame.room || frame.room === ROOM) staffNotice(ui.notices, frame.text, frame.level);
  },
  "pong"() {
    // Nothing to do: the browser answers the server's WebSocket pings itself.
  },
  "error"(frame) {
    if (frame.ref === "join") return stop(frame.detail);
    if (frame.code === "muted" && frame.retry_after) {
      composer.setMutedUntil(new Date(Date.now() + frame.retry_after * 1000).toISOString());
    }
    if (threads.failed(frame) || outbox.failed(frame)) return;
    showNotice(frame.detail);
  },
};

// Connection

const connection = new Connection({
  path: config.socketPath, loginUrl: config.loginUrl, handlers,
  onStatus: (status, seconds) => {
    if (status !== "online" && status !== "connecting") state.joined = false;
    if (status === "connecting") state.joined = false;
    setStatus(status, seconds);
  },
  onFinal: (code, reason) => stop(FINAL_REASONS[code] || reason),
});
const setStatus = statusView($("conn-state"), $("retry-now"), $("conn-countdown"));

/* Removed, banned or left: say so, with the ban's reason and end when there is one. */
async function removed(reason) {
  stop(LEFT_REASONS[reason] || LEFT_REASONS.left);
  if (reason === "banned") {
    const result = await api("GET", `/api/rooms/${encodeURIComponent(ROOM)}/`);
    if (!result.ok && result.data?.detail) {
      showNotice(result.data.detail);
      composer.close(result.data.detail);
    }
  }
}

function stop(reason) {
  state.stopped = true;
  state.joined = false;
  connection.stop();
  showNotice(reason);
  composer.close(reason);
  state.online.clear();
  members.render();
}

// Wiring

timeline.replace(config.history, {hasOlder: config.hasMore, hasNewer: false});
timeline.toBottom();
state.highestId = state.resumeId = timeline.newestId || 0;
// The page's history was read after the room's sequence value, so every change up to it is shown.
state.resumeSeq = Math.max(config.changeSeq || 0, ...config.history.map((m) => m.seq || 0));
renderHeader();
composer.setMutedUntil(config.mutedUntil);
rooms.onChange(() => renderSwitcher(ui.nav, rooms));
setUpNotificationButton($("enable-notifications"));
wireInvite({room: ROOM, members, onError: (text) => showNotice(text)});
suggestUsers($("dialog-direct-username"), $("direct-suggestions"));
wireSettings({room: ROOM, current: () => room});
wireLeave(() => room.name);
wirePanels();
wireFormattingHelp();
wireNotifySetting(ROOM, (text) => showNotice(text));
if (window.matchMedia("(min-width: 1100px)").matches) {
  document.querySelector(".room-page").classList.add("members-open");
  $("toggle-members")?.setAttribute("aria-expanded", "true");
}
members.load();
updateJumpUnread();
ui.jumpUnread?.addEventListener("click", async () => {
  await timeline.jumpToUnread();
  ui.jumpUnread.hidden = true;
});

async function followHash() {
  const match = location.hash.match(/^#m(\d+)$/);
  if (!match) return;
  const id = Number(match[1]);
  if (timeline.get(id) || !await threads.follow(id)) timeline.showAround(id);   // a reply opens in its thread
}
followHash();
window.addEventListener("hashchange", followHash);

document.addEventListener("visibilitychange", markRead);
window.addEventListener("focus", markRead);
window.addEventListener("online", () => connection.retryNow());
$("retry-now")?.addEventListener("click", () => connection.retryNow());

connection.connect();
