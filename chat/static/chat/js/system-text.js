/* System messages ("bob joined") are stored in English and shown in the reader's language. The page's
 * config holds, for each kind, the English template and the reader's one (chat/system_text.py):
 * the English one, as a pattern, finds the values to put into the reader's. */
import {config, fmt} from "./util.js";

let templates = null;   // [{pattern, names, localized}]

function compile(english, localized) {
  const names = [];
  const source = english.split(/%\((\w+)\)s/).map((part, index) => {
    if (index % 2 === 0) return part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    names.push(part);
    // Usernames have no spaces; a topic may hold anything, "bob joined" included.
    return part === "topic" ? "([\\s\\S]*)" : "(\\S+)";
  }).join("");
  return {pattern: new RegExp(`^${source}$`), names, localized};
}

/* `body` in the reader's language if it is a system message the server wrote, else `body`. */
export function systemText(body) {
  if (templates === null) {
    const pairs = Object.values(config()?.systemTexts || {});
    templates = pairs.map(([english, localized]) => compile(english, localized));
  }
  for (const {pattern, names, localized} of templates) {
    const match = pattern.exec(body);
    if (match) return fmt(localized, Object.fromEntries(names.map((name, index) => [name, match[index + 1]])));
  }
  return body;
}
