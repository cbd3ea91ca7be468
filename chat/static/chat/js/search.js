/* Message search in the room page's sidebar: GET /api/search/ (PROTOCOL.md, "Search"), newest
 * first, each result with its room, author and the server's highlight, linking to the room at the
 * message (`#m<id>`, which the room page opens in the history around it). */
import {$, api, detailOf, el, fmt} from "./util.js";

const PAGE = 20;
const form = $("search-form");
const list = $("search-results");
const more = $("search-more");
const status = $("search-status");
let params = null;
let oldestId = null;

function say(text) {
  status.textContent = text;
  status.hidden = !text;
}

function item({message, highlight}) {
  const link = el("a", {href: `/rooms/${encodeURIComponent(message.room)}/#m${message.id}`, className: "search-hit"},
    el("span", {className: "search-room", textContent: `#${message.room}`}),
    " ", el("span", {className: "author", textContent: message.author?.username || gettext("(gone)")}));
  // The server escapes the body and adds only <mark> (PROTOCOL.md, "Search").
  const text = el("div", {className: "search-text", dir: "auto"});
  text.innerHTML = highlight;
  link.append(text);
  return el("li", {className: "search-item"}, link);
}

async function load() {
  more.disabled = true;
  const query = new URLSearchParams(params);
  if (oldestId !== null) query.set("before", oldestId);
  const result = await api("GET", `/api/search/?${query}`);
  more.disabled = false;
  if (!result.ok) {
    say(detailOf(result));
    return;
  }
  const page = result.data.results;
  list.append(...page.map(item));
  if (page.length > 0) oldestId = page[page.length - 1].message.id;
  list.hidden = list.children.length === 0;
  more.hidden = !result.data.has_more;
  say(list.children.length === 0 ? gettext("No messages match.")
    : fmt(ngettext("%(count)s result shown", "%(count)s results shown", list.children.length),
          {count: list.children.length}));
}

form?.addEventListener("submit", (event) => {
  event.preventDefault();
  const data = new FormData(form);
  params = {q: data.get("q").trim(), limit: PAGE};
  if (data.get("room")) params.room = data.get("room");
  if (data.get("author").trim()) params.author = data.get("author").trim();
  list.replaceChildren();
  oldestId = null;
  more.hidden = true;
  if (!params.q) {
    say(gettext("Type a word to search for."));
    return;
  }
  load();
});
more?.addEventListener("click", load);
