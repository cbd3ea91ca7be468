/* The members panel (online first, then by role), invitations with username suggestions, the
 * room's settings (name, topic, lock) for those allowed, and leaving after a confirmation. */
import {confirmDialog, openDialog} from "./dialogs.js";
import {$, api, avatar, detailOf, el, fmt, toast} from "./util.js";

const ROLE_ORDER = {owner: 0, moderator: 1, member: 2};

export function roleLabel(role) {
  return {owner: gettext("owner"), moderator: gettext("moderator"), member: ""}[role] ?? role;
}

export class Members {
  constructor({room, me, online, onError}) {
    Object.assign(this, {room, me, online, onError});
    this.list = $("members");
    this.members = [];
    this.loadTimer = null;
  }

  /* Reload from REST soon: joins and leaves come in bursts. */
  reload() {
    clearTimeout(this.loadTimer);
    this.loadTimer = setTimeout(() => this.load(), 200);
  }

  async load() {
    const result = await api("GET", `/api/rooms/${encodeURIComponent(this.room)}/members/`);
    if (!result.ok) return;
    this.members = result.data;
    this.render();
  }

  render() {
    if (!this.list) return;
    const names = new Set(this.members.map((m) => m.user.username));
    // Someone online whom the member list has not caught up with yet is still shown.
    const rows = [...this.members.map((m) => ({username: m.user.username, role: m.role})),
                  ...Array.from(this.online).filter((name) => !names.has(name)).map((username) => ({username, role: "member"}))];
    rows.sort((a, b) => (this.online.has(b.username) - this.online.has(a.username))
      || (ROLE_ORDER[a.role] ?? 3) - (ROLE_ORDER[b.role] ?? 3) || a.username.localeCompare(b.username));
    this.list.replaceChildren(...rows.map(({username, role}) => {
      const online = this.online.has(username);
      const status = el("span", {className: "presence", role: "img",
                                 "aria-label": online ? gettext("online") : gettext("offline")});
      const name = el("span", {className: username === this.me ? "name me" : "name", textContent: username, dir: "auto"});
      return el("li", {className: online ? "online" : "offline", dataset: {user: username}},
                status, avatar(username), name, el("span", {className: "role", textContent: roleLabel(role)}));
    }));
  }
}

/* Suggestions for a username field from GET /api/users/?q=, into its <datalist>. */
export function suggestUsers(input, datalist) {
  if (!input || !datalist) return;
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    const prefix = input.value.trim();
    if (!prefix) return;
    timer = setTimeout(async () => {
      const result = await api("GET", `/api/users/?${new URLSearchParams({q: prefix, limit: 8})}`);
      if (result.ok) datalist.replaceChildren(...result.data.map((user) => el("option", {value: user.username})));
    }, 150);
  });
}

export function wireInvite({room, members, onError}) {
  const form = $("invite-form");
  if (!form) return;
  const input = $("invite-username");
  suggestUsers(input, $("user-suggestions"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const username = input.value.trim();
    if (!username) return;
    const result = await api("POST", `/api/rooms/${encodeURIComponent(room)}/members/`, {username});
    if (result.ok) {
      input.value = "";
      toast(fmt(gettext("%(username)s is invited."), {username}));
      members.reload();
    } else {
      onError(detailOf(result));
    }
  });
}

export function wireSettings({room, current}) {
  const form = $("settings-form");
  if (!form || !$("room-settings")) return;
  $("room-settings").addEventListener("click", () => {
    const now = current();
    $("settings-name").value = now.name;
    $("settings-topic").value = now.topic || "";
    $("settings-locked").checked = Boolean(now.locked);
    $("settings-error").textContent = "";
  });
  form.addEventListener("submit", async (event) => {
    if (event.submitter?.value !== "ok") return;
    event.preventDefault();
    const result = await api("PATCH", `/api/rooms/${encodeURIComponent(room)}/`, {
      name: $("settings-name").value, topic: $("settings-topic").value, locked: $("settings-locked").checked});
    if (result.ok) $("settings-dialog").close();   // room.updated redraws the header
    else $("settings-error").textContent = detailOf(result);
  });
}

export function wireLeave(roomName) {
  const form = $("leave-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    if (form.dataset.confirmed) return;
    event.preventDefault();
    const ok = await confirmDialog({
      title: fmt(gettext("Leave %(name)s?"), {name: roomName()}),
      text: gettext("You will stop receiving its messages. In a private room, someone must invite you again."),
      ok: gettext("Leave"),
    });
    if (ok) {
      form.dataset.confirmed = "1";
      form.requestSubmit();
    }
  });
}

/* Phones: the room switcher and the members are panels opened by buttons; Escape or their
 * Close button closes them, and focus goes back to the button that opened them. */
export function wirePanels() {
  const page = document.querySelector(".room-page");
  const panels = [["toggle-sidebar", "sidebar-open"], ["toggle-members", "members-open"]];
  const setOpen = (buttonId, className, open) => {
    page.classList.toggle(className, open);
    $(buttonId)?.setAttribute("aria-expanded", String(open));
  };
  for (const [buttonId, className] of panels) {
    const button = $(buttonId);
    if (!button) continue;
    button.addEventListener("click", () => {
      const open = !page.classList.contains(className);
      setOpen(buttonId, className, open);
      if (open) $(button.getAttribute("aria-controls"))?.focus();
    });
    document.querySelector(`[data-close-panel="${buttonId}"]`)?.addEventListener("click", () => {
      setOpen(buttonId, className, false);
      button.focus();
    });
  }
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || !window.matchMedia("(max-width: 640px)").matches) return;
    for (const [buttonId, className] of panels) {
      if (page.classList.contains(className)) {
        setOpen(buttonId, className, false);
        $(buttonId)?.focus();
      }
    }
  });
}

export {openDialog};
