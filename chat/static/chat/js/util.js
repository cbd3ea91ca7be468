/* Small helpers shared by the client's modules: elements, dates in the browser's locale,
 * avatars and same-origin JSON requests. Strings a person reads go through Django's
 * JavaScript catalog (the globals gettext, ngettext and interpolate from /jsi18n/). */

export const $ = (id) => document.getElementById(id);

/* An element with properties (`className`, `textContent`, `dataset`...) and children. Never HTML. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function fmt(text, values) {
  return interpolate(text, values, true);
}

export function config() {
  const island = $("chat-config");
  return island ? JSON.parse(island.textContent) : null;
}

// Dates: the browser's locale and time zone, through Intl.

const timeFormat = new Intl.DateTimeFormat(undefined, {hour: "2-digit", minute: "2-digit"});
const fullFormat = new Intl.DateTimeFormat(undefined, {dateStyle: "full", timeStyle: "medium"});
const dayFormat = new Intl.DateTimeFormat(undefined, {weekday: "long", year: "numeric", month: "long", day: "numeric"});
const dateFormat = new Intl.DateTimeFormat(undefined, {dateStyle: "medium"});

export function parseDate(iso) {
  const date = new Date(iso);
  return isNaN(date) ? null : date;
}

export function dayKey(date) {
  return `${date.getFullYear()}-${date.getMonth()}-${date.getDate()}`;
}

export function dayLabel(date) {
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (dayKey(date) === dayKey(today)) return gettext("Today");
  if (dayKey(date) === dayKey(yesterday)) return gettext("Yesterday");
  return dayFormat.format(date);
}

export function shortTime(date) {
  return timeFormat.format(date);
}

export function fullDateTime(date) {
  return fullFormat.format(date);
}

/* Every <time datetime> rendered by the server, in the browser's locale, the full date on hover. */
export function localizeTimes(root = document) {
  for (const time of root.querySelectorAll("time[datetime]")) {
    const date = parseDate(time.dateTime);
    if (!date) continue;
    time.textContent = time.dataset.format === "date" ? dateFormat.format(date) : shortTime(date);
    time.title = fullDateTime(date);
  }
}

// Avatars: initials on one of eight colours picked from the name, drawn locally.

export function avatar(username) {
  const name = username || "?";
  let hash = 0;
  for (const char of name) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  const letters = Array.from(name.replace(/[^\p{L}\p{N}]/gu, "") || name).slice(0, 2).join("").toUpperCase();
  return el("span", {className: `avatar c${hash % 8}`, textContent: letters, "aria-hidden": "true"});
}

// REST

export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/* A same-origin JSON request with the session and CSRF token: {ok, status, data}. */
export async function api(method, url, body) {
  let response;
  try {
    response = await fetch(url, {
      method, credentials: "same-origin",
      headers: {"Accept": "application/json", "Content-Type": "application/json", "X-CSRFToken": csrfToken()},
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    return {ok: false, status: 0, data: {detail: gettext("Could not reach the server: check the connection.")}};
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  return {ok: response.ok, status: response.status, data};
}

export function detailOf(result) {
  return (result.data && result.data.detail) || fmt(gettext("The server answered %(status)s."), {status: result.status});
}

let toastTimer = null;

/* A short confirmation that does not take focus; screen readers hear it through role=status. */
export function toast(text) {
  let node = $("toast");
  if (!node) {
    node = el("div", {id: "toast", className: "toast", role: "status"});
    document.body.append(node);
  }
  node.textContent = text;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { node.hidden = true; }, 3000);
}

/* A staff notice (the `notice` frame) in `container`, with a button that dismisses it. */
export function staffNotice(container, text, level) {
  const box = el("div", {className: `notice ${level === "warning" ? "warning" : "info"}`, role: "alert"},
                 el("span", {className: "notice-text", textContent: text, dir: "auto"}));
  const dismiss = el("button", {type: "button", className: "dismiss", textContent: "×", "aria-label": gettext("Dismiss")});
  dismiss.addEventListener("click", () => box.remove());
  box.append(dismiss);
  container.append(box);
}
