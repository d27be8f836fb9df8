// The dashboard's stylesheet (served as /dashboard/app.css by dashboard.ts; the CSP allows no inline style).
export const DASHBOARD_CSS = `
:root { --fg: #1d2329; --muted: #66717c; --line: #dde2e6; --bg: #f6f7f8; --card: #fff;
  --delivered: #2e8b57; --deferred: #d49a00; --bounced: #c8372d; --complaints: #7b3fb5; --warn-bg: #fff3cd; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; gap: .4em 1em; align-items: center; padding: .6em 1.2em; background: #20262c; color: #fff; }
header h1 { font-size: 1.2em; margin: 0; }
header .status { color: #b9c2ca; flex: 1; }
header .refresh { color: #dfe5ea; }
main { padding: 1em 1.2em; display: grid; gap: 1em; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .8em 1em; }
h2 { font-size: 1.05em; margin: 0 0 .6em; display: flex; gap: .8em; align-items: center; }
h3 { font-size: .95em; margin: .9em 0 .3em; color: var(--muted); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25em .5em; border-bottom: 1px solid var(--line); vertical-align: top; overflow-wrap: break-word; }
th { font-weight: 600; color: var(--muted); font-size: .9em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.empty { color: var(--muted); font-style: italic; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
button { font: inherit; padding: .15em .6em; border: 1px solid #aab4bd; border-radius: 4px; background: #fff; cursor: pointer; }
button:hover { background: #eef1f3; }
button:disabled { opacity: .5; cursor: default; }
button.danger { border-color: var(--bounced); color: var(--bounced); }
td.actions { white-space: nowrap; }
td.actions button + button { margin-left: .3em; }
.cards { display: flex; gap: .8em; flex-wrap: wrap; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: .4em .9em; min-width: 7em; }
.card b { display: block; font-size: 1.5em; }
.card span { color: var(--muted); font-size: .85em; }
.notice { margin: .8em 1.2em 0; padding: .5em .9em; border-radius: 6px; background: #fde2e0; border: 1px solid #f0b4ae; }
.notice.ok { background: #e3f4e8; border-color: #a9d8b8; }
.warnings { margin: 0; padding: 0; list-style: none; }
.warnings li { background: var(--warn-bg); border: 1px solid #f1d27a; border-radius: 4px; padding: .3em .7em; margin-bottom: .3em; }
.warnings li.none { background: none; border: none; color: var(--muted); padding-left: 0; }
tr.warn td { background: var(--warn-bg); }
.period button.active { background: #20262c; color: #fff; border-color: #20262c; }
.filters { display: flex; flex-wrap: wrap; gap: .5em; margin-bottom: .5em; }
.filters input, .filters select { font: inherit; padding: .15em .4em; }
.badge { display: inline-block; padding: 0 .45em; border-radius: 3px; font-size: .85em; background: #e8ecef; white-space: nowrap; }
.badge.delivered { background: #d6efdf; } .badge.deferred { background: #fbecc0; } .badge.bounced, .badge.rejected { background: #f8d5d2; }
.badge.complaint { background: #e8dcf5; } .badge.accepted { background: #dfe9f7; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(360px, 100%), 1fr)); gap: 1em; }
figure { margin: 0; }
figcaption { font-size: .9em; color: var(--muted); margin-bottom: .3em; }
.legend i { display: inline-block; width: .8em; height: .8em; margin: 0 .25em 0 .7em; vertical-align: -1px; }
.k-delivered { background: var(--delivered); } .k-deferred { background: var(--deferred); } .k-bounced { background: var(--bounced); }
.k-complaints { background: var(--complaints); } .k-threshold { background: none; border-top: 2px dashed var(--muted); height: 0 !important; }
.chart svg { width: 100%; height: auto; display: block; }
svg .axis { stroke: var(--line); stroke-width: 1; }
svg text { fill: var(--muted); font-size: 10px; }
svg .delivered { fill: var(--delivered); } svg .deferred { fill: var(--deferred); } svg .bounced { fill: var(--bounced); } svg .complaints { fill: var(--complaints); }
svg .line-bounced { fill: none; stroke: var(--bounced); stroke-width: 2; }
svg .line-complaints { fill: none; stroke: var(--complaints); stroke-width: 2; }
svg .threshold-bounced { stroke: var(--bounced); stroke-dasharray: 4 3; stroke-width: 1; opacity: .7; }
svg .threshold-complaints { stroke: var(--complaints); stroke-dasharray: 4 3; stroke-width: 1; opacity: .7; }
/* Messages: one line per pending recipient in the recipient columns; the queue id opens the detail view. */
td .rcpt + .rcpt { margin-top: .2em; padding-top: .2em; border-top: 1px dotted var(--line); }
td.reply { max-width: 28em; color: #444; }
button.link { white-space: nowrap; border: none; background: none; padding: 0; color: #1f5fa8; text-decoration: underline; font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
button.link:hover { background: none; color: #0d3c73; }
.search { display: flex; flex-wrap: wrap; gap: .5em; align-items: center; margin-bottom: .3em; }
.search input { font: inherit; padding: .2em .5em; flex: 1; min-width: 12em; max-width: 28em; }
.hint { color: var(--muted); font-size: .85em; margin: .3em 0 0; }
/* The detail view: a modal dialog over the page. */
dialog#detail { width: min(64em, 96vw); max-height: 92vh; overflow: auto; padding: 0; border: 1px solid var(--line); border-radius: 6px; }
dialog#detail::backdrop { background: rgba(20, 26, 32, .45); }
.detail-head { display: flex; flex-wrap: wrap; gap: .5em 1em; align-items: center; padding: .6em 1em; background: #20262c; color: #fff; position: sticky; top: 0; }
.detail-head h2 { margin: 0; flex: 1; color: #fff; }
.detail-body { padding: .6em 1em 1em; }
.detail-actions { display: flex; flex-wrap: wrap; gap: .4em; }
dl.envelope { display: grid; grid-template-columns: max-content 1fr; gap: .15em 1em; margin: 0; }
dl.envelope dt { color: var(--muted); }
dl.envelope dd { margin: 0; overflow-wrap: anywhere; }
pre.headers { margin: 0; padding: .5em; background: var(--bg); border: 1px solid var(--line); border-radius: 4px; white-space: pre-wrap; overflow-wrap: anywhere; font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
/* Narrow screens (a phone on call): tables become one card per row, each cell labelled by its column. */
@media (max-width: 640px) {
  header { padding: .5em .8em; }
  header .status { flex-basis: 100%; order: 3; }
  main { padding: .6em; gap: .6em; }
  section { padding: .6em .7em; }
  h2 { flex-wrap: wrap; }
  table, tbody, tr, td { display: block; width: 100%; }
  thead { display: none; }
  tr { padding: .35em 0; border-bottom: 1px solid var(--line); }
  td, td.num { border: none; padding: .1em 0; text-align: left; overflow-wrap: anywhere; }
  td[data-label]::before { content: attr(data-label) ": "; color: var(--muted); font-size: .85em; }
  td.actions { white-space: normal; padding-top: .3em; }
  td.actions button { margin: 0 .3em .3em 0; }
  td.actions button + button { margin-left: 0; }
  td.reply { max-width: none; }
  dl.envelope { grid-template-columns: 1fr; }
  dl.envelope dd { margin-bottom: .3em; }
  .card { min-width: 6em; flex: 1; }
}
`
