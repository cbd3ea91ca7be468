/* A public room seen by a non-member: its recent history, read-only, in local time. */
import {wirePanels} from "./members.js";
import {Timeline} from "./timeline.js";
import {$, api, config as readConfig} from "./util.js";

const config = readConfig();
const timeline = new Timeline({
  list: $("messages"), pending: $("pending"), scroller: $("scroller"), older: $("load-older"), newer: $("load-newer"),
  jumpNew: $("jump-new"), me: config.user.username, lastReadId: 0, onAtBottom: () => {}, onError: () => {},
  fetchPage: async (params) => {
    const result = await api("GET", `${config.historyUrl}?${new URLSearchParams(params)}`);
    if (!result.ok) throw new Error(result.data?.detail || `HTTP ${result.status}`);
    return result.data;
  },
});
timeline.replace(config.history, {hasOlder: config.hasMore, hasNewer: false});
timeline.toBottom();
for (const button of $("messages").querySelectorAll(".msg-menu-button")) button.hidden = true;
wirePanels();
