/* The room list page, live: rooms the user joins or is invited to appear, removed ones go,
 * unread counts follow, and the tab title carries the total. Every server frame type has its
 * entry; those about a room's content have nothing to show here. */
import {Connection, statusView} from "./connection.js";
import {notifyFrame} from "./notify.js";
import {RoomsState, setUpNotificationButton} from "./rooms-state.js";
import {renderRoomList} from "./switcher.js";
import {mentionsMe} from "./timeline.js";
import {suggestUsers} from "./members.js";
import {$, config as readConfig, el, staffNotice} from "./util.js";

const config = readConfig();
const ME = config.user.username;
const rooms = new RoomsState({baseTitle: document.title});
const list = $("my-rooms");
const ignore = () => {};

const handlers = {
  "hello"(frame) {
    rooms.reset(frame.rooms);
    connection.established();
  },
  "room.joined"(frame) {
    rooms.learn(frame.room);
  },
  "room.left"(frame) {
    rooms.remove(frame.room);
  },
  "room.updated"(frame) {
    if (frame.archived) rooms.remove(frame.room);
    else rooms.update(frame.room, {name: frame.name, topic: frame.topic});
  },
  "message.new"(frame) {
    if (frame.message.author?.username === ME) return;
    if (rooms.has(frame.room)) rooms.bump(frame.room, {mention: mentionsMe(frame.message)});
    else rooms.learn(frame.room);
  },
  "unread"(frame) {
    rooms.update(frame.room, {unread: frame.count, mentions: frame.mentions || 0});
  },
  "notification"(frame) {
    notifyFrame(rooms, frame);
  },
  "room.gap": ignore,
  "message.updated": ignore,
  "message.deleted": ignore,
  "presence": ignore,
  "member.joined": ignore,
  "member.left": ignore,
  "typing": ignore,
  "notice"(frame) {
    if (!frame.room) staffNotice($("notices"), frame.text, frame.level);
  },
  "pong": ignore,
  "error": ignore,
};

const connection = new Connection({
  path: config.socketPath, loginUrl: config.loginUrl, handlers,
  onStatus: statusView(null, null, null), onFinal: ignore,
});
rooms.onChange(() => renderRoomList(list, rooms));
setUpNotificationButton($("enable-notifications"));
const directInput = document.querySelector("#direct input[name=username]");
if (directInput) {
  const suggestions = el("datalist", {id: "direct-suggestions"});
  directInput.after(suggestions);
  directInput.setAttribute("list", suggestions.id);
  directInput.autocomplete = "off";
  suggestUsers(directInput, suggestions);
}
connection.connect();
