/* What every page does: the theme toggle, local dates and times, avatars, dialog buttons. */
import {wireDialogButtons} from "./dialogs.js";
import {$, avatar, localizeTimes} from "./util.js";

const THEME_KEY = "chat-theme";

function currentTheme() {
  return document.documentElement.dataset.theme
    || (window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
}

function wireThemeToggle() {
  const button = $("theme-toggle");
  if (!button) return;
  const show = () => button.setAttribute("aria-pressed", String(currentTheme() === "dark"));
  button.addEventListener("click", () => {
    const next = currentTheme() === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    try {
      localStorage.setItem(THEME_KEY, next);
    } catch {
      // Storage refused: the choice lasts for this page.
    }
    show();
  });
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", show);
  show();
}

wireThemeToggle();
localizeTimes(document.querySelector("main"));
for (const placeholder of document.querySelectorAll(".avatar[data-username]")) {
  const drawn = avatar(placeholder.dataset.username);
  drawn.classList.add("avatar-large");
  placeholder.replaceWith(drawn);
}
wireDialogButtons();
