// The "Load more" button of a paged table (traces, sessions): it fetches the
// next page of /api/<kind> at the last page's cursor and appends its rows.
import { api, showError } from "./api.js";
import { addRows, h } from "./dom.js";

export function loadMore({ kind, params, page, table, cols, rowHref, summary, signal, stale }) {
  let shown = (page[kind] || []).length;
  let cursor = page.next_cursor;
  const say = () => { summary.textContent = `${shown} ${kind}${cursor ? " (more below)" : ""}`; };
  say();
  const more = h("button", { type: "button", class: "btn more", onclick: () => {
    more.disabled = true;
    const next = new URLSearchParams(params);
    next.set("cursor", cursor);
    api(kind, next, signal).then((pg) => {
      if (stale()) return;
      addRows(table, cols, pg[kind] || [], { rowHref });
      shown += (pg[kind] || []).length;
      cursor = pg.next_cursor;
      say();
      more.disabled = false;
      more.hidden = !cursor;
    }, (err) => {
      more.disabled = false;
      showError(err);
    });
  } }, "Load more");
  more.hidden = !cursor;
  return more;
}
