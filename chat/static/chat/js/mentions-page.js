/* The mentions inbox (/mentions/): GET /api/mentions/ pages, newest first, each message with its
 * room, author, time and the server's sanitized HTML, linking to the room at the message. */
import {markRendered} from "./timeline.js";
import {$, api, config as readConfig, dayLabel, detailOf, el, fullDateTime, parseDate, shortTime} from "./util.js";

const PAGE = 20;
const config = readConfig();
const list = $("mentions");
const more = $("mentions-more");
let oldestId = null;

function item(message) {
  const href = `/rooms/${encodeURIComponent(message.room)}/#m${message.id}`;
  const date = parseDate(message.created_at);
  const time = el("time", {dateTime: message.created_at,
                           textContent: date ? `${dayLabel(date)} ${shortTime(date)}` : "",
                           title: date ? fullDateTime(date) : ""});
  const body = el("div", {className: "body rich", dir: "auto"});
  // Rendered and sanitized by the server (chat/markup.py), as in the room's timeline.
  body.innerHTML = message.html;
  markRendered(body, message);
  return el("li", {className: "mention-item", id: `m${message.id}`},
    el("div", {className: "msg-head"},
      el("a", {href, className: "mention-room", textContent: config.rooms?.[message.room] || message.room, dir: "auto"}),
      " ", el("span", {className: "author", textContent: message.author?.username || gettext("(gone)")}),
      " ", time),
    body);
}

async function load() {
  more.disabled = true;
  const params = new URLSearchParams({limit: PAGE});
  if (oldestId !== null) params.set("before", oldestId);
  const result = await api("GET", `/api/mentions/?${params}`);
  more.disabled = false;
  list.removeAttribute("aria-busy");
  if (!result.ok) {
    $("notice").textContent = detailOf(result);
    $("notice").hidden = false;
    return;
  }
  const page = result.data.results;   // ascending by id: the newest page first, shown newest first
  list.append(...page.slice().reverse().map(item));
  if (page.length > 0) oldestId = page[0].id;
  more.hidden = !result.data.has_more;
  $("mentions-empty").hidden = list.children.length > 0;
}

more.addEventListener("click", load);
load();
