/* Applies the saved colour theme before the page paints; without one, prefers-color-scheme decides. */
"use strict";
(function () {
  try {
    const theme = localStorage.getItem("chat-theme");
    if (theme === "dark" || theme === "light") document.documentElement.dataset.theme = theme;
  } catch (error) {
    // Storage refused (private mode): the system preference applies.
  }
})();
