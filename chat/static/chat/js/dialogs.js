/* Modal dialogs on <dialog>: showModal traps focus and Escape closes; focus returns to the
 * element that opened the dialog. */
import {$} from "./util.js";

export function openDialog(dialog) {
  const opener = document.activeElement;
  dialog.addEventListener("close", () => opener?.focus?.(), {once: true});
  dialog.showModal();
}

/* Resolves true when the user confirms. */
export function confirmDialog({title, text, ok}) {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text || "";
  $("confirm-ok").textContent = ok || gettext("OK");
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), {once: true});
    openDialog(dialog);
  });
}

/* Buttons with data-open-dialog="<id>" open it; data-close-dialog buttons close theirs. */
export function wireDialogButtons(root = document) {
  for (const button of root.querySelectorAll("[data-open-dialog]")) {
    const dialog = $(button.dataset.openDialog);
    if (dialog) button.addEventListener("click", () => openDialog(dialog));
  }
  for (const button of root.querySelectorAll("[data-close-dialog]")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }
}
