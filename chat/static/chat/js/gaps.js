/* What the socket could not replay, fetched over REST: a range of missed messages (room.gap), or,
 * after a gap of changes (room.gap with "changes": true), the page the reader is looking at,
 * loaded again so that every edit, deletion and reaction on it is current. */
const GAP_PAGE = 200;
const PAGE = 50;

/* Messages after `after` and before `before`, page by page, into the timeline. */
export async function fillGap(timeline, fetchPage, after, before) {
  for (let from = after, more = true; more;) {
    const page = await fetchPage({after: from, before, limit: GAP_PAGE});
    timeline.add(page.results);
    more = page.has_more && page.results.length > 0;
    if (more) from = page.results[page.results.length - 1].id;
  }
}

/* The page around the message at the top of the view (the newest page when reading the end),
 * replacing what is shown; returns its messages. */
export async function reloadView(timeline, fetchPage) {
  const atEnd = timeline.nearBottom() && !timeline.hasNewer;
  const anchor = atEnd ? null : timeline.firstVisibleId();
  const page = await fetchPage(anchor ? {around: anchor, limit: PAGE} : {limit: PAGE});
  timeline.replace(page.results, anchor ? {hasOlder: page.has_more_before, hasNewer: page.has_more_after}
                                        : {hasOlder: page.has_more, hasNewer: false});
  if (anchor) timeline.showAround(anchor, {highlight: false});
  else timeline.toBottom();
  return page.results;
}
