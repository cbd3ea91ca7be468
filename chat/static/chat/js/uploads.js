/* Files (PROTOCOL.md, "Files"): attach by button, drag and drop or paste; each file uploads at
 * once (XHR, for its progress bar) and waits in the tray until the message is sent with it.
 * In the timeline, images show as previews that open larger on click; other files as a card
 * with name, size and a download link. */
import {csrfToken, el, fmt} from "./util.js";
import {openDialog} from "./dialogs.js";

const MAX_FILES = 10;   // PROTOCOL.md: at most 10 attachments per message

export function formatSize(bytes) {
  if (bytes < 1024) return fmt(ngettext("%(count)s byte", "%(count)s bytes", bytes), {count: bytes});
  const units = [gettext("%(size)s KB"), gettext("%(size)s MB"), gettext("%(size)s GB")];
  let size = bytes / 1024;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return fmt(units[unit], {size: size.toFixed(size < 10 ? 1 : 0)});
}

export class Uploads {
  constructor({room, form, input, onError, onChange}) {
    Object.assign(this, {room, form, input, onError, onChange});
    this.items = [];          // {file, node, bar, data?, xhr}
    this.claimed = new Map(); // client_id -> the items sent with that message, until it is acknowledged
    if (!form) return;
    this.picker = el("input", {type: "file", multiple: true, hidden: true, id: "attach-input"});
    this.button = el("button", {type: "button", id: "attach", className: "secondary attach",
                                textContent: gettext("Attach"), title: gettext("Attach files (or drop or paste them here)")});
    this.tray = el("ul", {id: "upload-tray", className: "upload-tray", "aria-label": gettext("Files to send")});
    this.tray.hidden = true;
    form.prepend(this.tray);
    form.querySelector("[type=submit]").before(this.button, this.picker);
    this.button.addEventListener("click", () => this.picker.click());
    this.picker.addEventListener("change", () => {
      this.add(Array.from(this.picker.files));
      this.picker.value = "";
    });
    const drop = form.closest("section") || form;
    drop.addEventListener("dragover", (event) => {
      if (!Array.from(event.dataTransfer?.types || []).includes("Files")) return;
      event.preventDefault();
      drop.classList.add("dropping");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("dropping"));
    drop.addEventListener("drop", (event) => {
      drop.classList.remove("dropping");
      if (!event.dataTransfer?.files?.length) return;
      event.preventDefault();
      this.add(Array.from(event.dataTransfer.files));
    });
    input.addEventListener("paste", (event) => {
      const files = Array.from(event.clipboardData?.files || []);
      if (!files.length) return;
      event.preventDefault();
      this.add(files);
    });
  }

  add(files) {
    for (const file of files) {
      if (this.items.length >= MAX_FILES) {
        this.onError(fmt(gettext("At most %(max)s files per message."), {max: MAX_FILES}));
        break;
      }
      this.start(file);
    }
  }

  start(file) {
    const bar = el("progress", {max: 100, value: 0});
    bar.setAttribute("aria-label", fmt(gettext("Uploading %(name)s"), {name: file.name}));
    const remove = el("button", {type: "button", className: "link", textContent: "×", "aria-label": gettext("Remove")});
    const node = el("li", {className: "upload-item uploading"},
                    el("span", {className: "upload-name", textContent: file.name, dir: "auto"}),
                    el("span", {className: "upload-size", textContent: formatSize(file.size)}), bar, remove);
    const item = {file, node, bar, data: null, xhr: new XMLHttpRequest()};
    remove.addEventListener("click", () => this.drop(item));
    this.items.push(item);
    this.tray.append(node);
    this.tray.hidden = false;
    const body = new FormData();
    body.append("file", file);
    const xhr = item.xhr;
    xhr.open("POST", `/api/rooms/${encodeURIComponent(this.room)}/uploads/`);
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) bar.value = Math.round((event.loaded / event.total) * 100);
    });
    xhr.addEventListener("load", () => this.finished(item));
    xhr.addEventListener("error", () => this.failed(item, gettext("Could not reach the server: check the connection.")));
    xhr.send(body);
    this.changed();
  }

  finished(item) {
    let data = null;
    try {
      data = JSON.parse(item.xhr.responseText);
    } catch {
      data = null;
    }
    if (item.xhr.status !== 201 || !data) {
      this.failed(item, (data && data.detail) || fmt(gettext("The server answered %(status)s."), {status: item.xhr.status}));
      return;
    }
    item.data = data;
    item.bar.value = 100;
    item.node.classList.replace("uploading", "uploaded");
    this.changed();
  }

  failed(item, detail) {
    this.drop(item);
    this.onError(fmt(gettext("%(name)s was not uploaded: %(reason)s"), {name: item.file.name, reason: detail}));
  }

  drop(item) {
    if (!item.data) item.xhr.abort();
    item.node.remove();
    this.items = this.items.filter((other) => other !== item);
    this.tray.hidden = !this.items.length;
    this.changed();
  }

  changed() {
    if (this.onChange) this.onChange();
  }

  /* Whether a message may go now: nothing still uploading. */
  busy() {
    return this.items.some((item) => !item.data);
  }

  ready() {
    return this.items.length > 0 && !this.busy();
  }

  /* The uploaded files leave the tray with the message `clientId`. */
  claim(clientId) {
    if (!this.ready()) return;
    this.claimed.set(clientId, this.items);
    for (const item of this.items) item.node.remove();
    this.items = [];
    this.tray.hidden = true;
    this.changed();
  }

  /* The `attachments` of the send frame of `clientId` (none: no field, as before). */
  fields(clientId) {
    const items = this.claimed.get(clientId);
    return items ? {attachments: items.map((item) => item.data.id)} : {};
  }

  acknowledged(clientId) {
    this.claimed.delete(clientId);
  }

  /* A refused send: its files go back to the tray. */
  restore(clientId) {
    const items = this.claimed.get(clientId);
    if (!items) return;
    this.claimed.delete(clientId);
    for (const item of items) {
      this.items.push(item);
      this.tray.append(item.node);
    }
    this.tray.hidden = !this.items.length;
    this.changed();
  }
}

let viewer = null;

function showLarge(file) {
  if (!viewer) {
    const image = el("img", {className: "viewer-image", alt: ""});
    const close = el("button", {type: "button", className: "secondary", textContent: gettext("Close")});
    viewer = el("dialog", {id: "image-viewer", className: "image-viewer"}, image,
                el("div", {className: "viewer-bar"}, el("a", {className: "viewer-link", target: "_blank",
                                                                    rel: "noopener", textContent: gettext("Open original")}), close));
    close.addEventListener("click", () => viewer.close());
    viewer.addEventListener("click", (event) => { if (event.target === viewer) viewer.close(); });
    document.body.append(viewer);
  }
  const image = viewer.querySelector("img");
  image.src = file.url;
  image.alt = file.name;
  viewer.querySelector("a").href = file.url;
  openDialog(viewer);
}

/* A message hook (timeline.js `messageHooks`): the message's files under its text. */
export function renderAttachments(node, message) {
  node.querySelector(".attachments")?.remove();
  const files = message.deleted ? [] : message.attachments || [];
  if (!files.length) return;
  const box = el("div", {className: "attachments"});
  for (const file of files) {
    if (file.thumb_url) {
      const image = el("img", {src: file.thumb_url, alt: file.name, loading: "lazy", className: "attachment-thumb"});
      if (file.width && file.height) {
        image.width = Math.min(file.width, 240);
        image.height = Math.round((image.width * file.height) / file.width);
      }
      const open = el("button", {type: "button", className: "attachment-image", title: file.name}, image);
      open.setAttribute("aria-label", fmt(gettext("View %(name)s larger"), {name: file.name}));
      open.addEventListener("click", () => showLarge(file));
      box.append(open);
    } else {
      box.append(el("div", {className: "attachment-card"},
        el("span", {className: "attachment-name", textContent: file.name, dir: "auto"}),
        el("span", {className: "attachment-size", textContent: formatSize(file.size)}),
        el("a", {href: file.url, download: file.name, className: "attachment-download", textContent: gettext("Download")})));
    }
  }
  const main = node.querySelector(".msg-main") || node;
  main.append(box);
}
