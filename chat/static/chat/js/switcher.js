/* The room switcher of the room page and the live room list of the home page, both drawn from
 * RoomsState: new rooms appear, removed ones go, unread and "@" mention badges follow. */
import {el, fmt} from "./util.js";

function badge(count) {
  return el("span", {className: "badge unread", textContent: count > 0 ? String(count) : "",
                     title: gettext("unread messages")});
}

function mentionBadge(count) {
  return el("span", {className: "badge mention", textContent: count > 0 ? `@${count}` : "",
                     title: gettext("unread mentions of you")});
}

function roomLink(room) {
  return el("a", {href: `/rooms/${encodeURIComponent(room.slug)}/`, textContent: room.name, dir: "auto"});
}

function unreadLabel(room) {
  const label = room.unread > 0
    ? fmt(ngettext("%(name)s, %(count)s unread message", "%(name)s, %(count)s unread messages", room.unread),
          {name: room.name, count: room.unread})
    : room.name;
  return room.mentions > 0
    ? fmt(ngettext("%(label)s, %(count)s mention of you", "%(label)s, %(count)s mentions of you", room.mentions),
          {label, count: room.mentions})
    : label;
}

/* The room page's sidebar: rooms, then direct messages, each a heading and a list. */
export function renderSwitcher(container, rooms) {
  const sections = [];
  const groups = [[gettext("Rooms"), rooms.sorted().filter((room) => room.kind !== "direct")],
                  [gettext("Direct messages"), rooms.sorted().filter((room) => room.kind === "direct")]];
  for (const [title, group] of groups) {
    if (group.length === 0) continue;
    const list = el("ul", {className: "nav"});
    for (const room of group) {
      const current = room.slug === rooms.current;
      const link = roomLink(room);
      link.setAttribute("aria-label", unreadLabel(room));
      if (current) link.setAttribute("aria-current", "page");
      list.append(el("li", {className: current ? "current" : "", dataset: {room: room.slug}},
                     link, mentionBadge(current ? 0 : room.mentions), badge(current ? 0 : room.unread)));
    }
    sections.push(el("h3", {textContent: title}), list);
  }
  container.replaceChildren(...sections);
}

/* The home page's "Your rooms": the server rendered it; keep it in step without redrawing it. */
export function renderRoomList(list, rooms) {
  const shown = new Map(Array.from(list.querySelectorAll("li[data-room]"), (li) => [li.dataset.room, li]));
  for (const [slug, li] of shown) if (!rooms.has(slug)) li.remove();
  for (const room of rooms.sorted()) {
    let li = shown.get(room.slug);
    if (!li) {
      const kind = el("span", {className: "kind", textContent: {public: gettext("public"), private: gettext("private"),
                                                                 direct: gettext("direct")}[room.kind] || room.kind});
      li = el("li", {className: "room-item", dataset: {room: room.slug}},
              el("div", {className: "room-item-main"}, roomLink(room), " ", kind, " ", mentionBadge(0), " ", badge(0)));
      list.append(li);
      document.querySelector(`#public-rooms li[data-room="${CSS.escape(room.slug)}"]`)?.remove();
    }
    li.querySelector(".badge.unread").textContent = room.unread > 0 ? String(room.unread) : "";
    const mentions = li.querySelector(".badge.mention");
    if (mentions) mentions.textContent = room.mentions > 0 ? `@${room.mentions}` : "";
  }
  list.querySelector(".empty")?.toggleAttribute("hidden", rooms.rooms.size > 0);
}
