"""The HTML report's own stylesheet and script, inlined into every report it writes.

The page must open anywhere, offline, so nothing is linked. The grid's first
column (what differs on the line, with both values of every differing column)
stays pinned at the left edge while the rest scrolls sideways, so however many
columns a table has, a reader sees the differing values without scrolling.
"""

CSS = """
:root{color-scheme:light;--key:#e8f0ff;--key-ink:#1a3a85;--chg:#fff1bf;--chg-edge:#d49b00;
--miss:#fde8e8;--miss-ink:#a4161a;--l:#1d5fd1;--r:#8a2bc2;--line:#e3e6ea;--mute:#6b7280}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;
background:#f6f7f9}
header.report-head{background:#fff;border-bottom:1px solid var(--line);padding:18px 28px}
h1{font-size:20px;margin:0 0 10px}
h1 .tname{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.banner{border-radius:6px;padding:10px 14px;margin:10px 0;font-size:15px}
.banner.partial{background:#fff4e5;border:1px solid #f0a020;color:#6b3d00}
.banner.match{background:#e7f7ec;border:1px solid #3fa45b;color:#124d22}
.banner.mismatch{background:#fdecec;border:1px solid #d9534f;color:#7a1212}
.facts{display:grid;grid-template-columns:max-content 1fr max-content 1fr;gap:4px 16px;margin:12px 0}
.facts dt{color:var(--mute)}.facts dd{margin:0;word-break:break-all}
table.pairs{border-collapse:collapse;margin:8px 0}
table.pairs th,table.pairs td{border:1px solid var(--line);padding:4px 12px;text-align:left}
table.pairs td.n{text-align:right;font-variant-numeric:tabular-nums}
table.pairs tr.same td{color:var(--mute)}
.legend{display:flex;flex-wrap:wrap;gap:14px;align-items:center;color:var(--mute);font-size:13px}
.legend .sw{display:inline-block;width:14px;height:14px;border-radius:3px;vertical-align:-2px;
margin-right:4px}
main{padding:8px 28px 40px}
section.pair{background:#fff;border:1px solid var(--line);border-radius:8px;margin:18px 0;
padding:14px 16px}
section.pair h2{font-size:17px;margin:0 0 6px}
section.pair h2 .tag{font-size:13px;padding:1px 6px}
section.pair h2 .vs{font-weight:normal;margin:0 8px 0 3px}
.status .which{color:#6b4e00}
section.pair h2 .count{font-weight:normal;color:var(--mute);font-size:14px;margin-left:8px}
.note{background:#fff4e5;border:1px solid #f0a020;border-radius:6px;padding:6px 10px}
.tools{display:none;gap:8px;align-items:center;margin:8px 0}
.js .tools{display:flex}
.tools input,.tools select,.tools button{font:inherit;padding:3px 8px}
.tools .shown{color:var(--mute)}
.scroll{overflow-x:auto;border:1px solid var(--line);border-radius:6px}
.grid{width:max-content;min-width:100%}
.grid-head,details.line>summary{display:grid;grid-template-columns:var(--cols)}
.grid-head{background:#f0f2f5;font-weight:600;position:sticky;top:0;z-index:1}
.grid-head>div{padding:6px 8px;border-right:1px solid var(--line)}
.grid-head .type{display:block;font-weight:normal;color:var(--mute);font-size:12px}
.grid-head .key{background:#dbe6fd;color:var(--key-ink)}
details.line{border-top:1px solid var(--line);content-visibility:auto;
contain-intrinsic-size:auto 2.4em}
details.line>summary{cursor:pointer;list-style:none}
details.line>summary::-webkit-details-marker{display:none}
details.line>summary:hover{filter:brightness(.97)}
details.line.missing>summary{background:var(--miss)}
.cell,.status{padding:5px 8px;border-right:1px solid var(--line);white-space:nowrap;
overflow:hidden;text-overflow:ellipsis;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
font-size:13px}
.status{font-family:inherit;position:sticky;left:0;z-index:1;background:#fff;
white-space:normal;overflow:visible;box-shadow:2px 0 0 var(--line)}
details.line.missing>summary .status{background:var(--miss)}
.grid-head>div:first-child{position:sticky;left:0;z-index:2;background:#f0f2f5}
.delta{display:block;margin-top:3px}
.delta .d{display:flex;flex-wrap:wrap;align-items:baseline;gap:1px 6px;font-size:12px;
line-height:1.35;padding:2px 0;border-top:1px dotted var(--line)}
.delta .dn{font-weight:600;color:#6b4e00}
.delta .dv{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
overflow-wrap:anywhere;background:var(--chg);padding:0 3px;max-width:100%}
.status .tw::before{content:"\\25B8";display:inline-block;width:1em;color:var(--mute)}
details[open]>summary .tw::before{content:"\\25BE"}
.cell.key{background:var(--key);color:var(--key-ink);font-weight:700}
.cell.same{color:#3b4048}
details.line.missing .cell.same{color:#6b4b4b}
.cell.changed{background:var(--chg);box-shadow:inset 3px 0 0 var(--chg-edge);white-space:normal}
.cell.changed .v{display:block;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.tag{display:inline-block;font:600 10px/1.5 system-ui,sans-serif;border-radius:3px;padding:0 4px;
margin-right:5px;color:#fff;vertical-align:1px}
.tag.l{background:var(--l)}.tag.r{background:var(--r)}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600}
.badge.changed{background:var(--chg);color:#6b4e00;border:1px solid var(--chg-edge)}
.badge.missing{background:var(--miss-ink);color:#fff}
.null{font-style:italic;font-family:system-ui,sans-serif;font-size:11px;color:#555;
background:#eceef1;border:1px solid #b8bec7;border-radius:3px;padding:0 4px}
.empty{font-family:system-ui,sans-serif;font-size:11px;color:#7a5c00;border:1px dashed #b08d2a;
border-radius:3px;padding:0 4px}
.cut{color:var(--mute);font-weight:700}
.full{position:sticky;left:0;width:min(100%,calc(100vw - 90px));padding:10px 14px 14px;
background:#fbfbfc;border-top:1px dashed var(--line)}
table.sides{border-collapse:collapse;width:100%;table-layout:fixed}
table.sides th,table.sides td{border:1px solid var(--line);padding:4px 8px;vertical-align:top;
text-align:left}
table.sides thead th{background:#f0f2f5}
table.sides th.col{width:16%;font-weight:600}
table.sides .typ{display:block;color:var(--mute);font-weight:normal;font-size:12px}
table.sides tr.key th.col,table.sides tr.key td{background:var(--key);color:var(--key-ink)}
table.sides tr.changed td{background:var(--chg)}
table.sides td.absent{background:var(--miss);color:var(--miss-ink);font-style:italic}
table.sides code{white-space:pre-wrap;word-break:break-all;font-size:13px}
footer{color:var(--mute);font-size:12px;padding:0 28px 24px}
"""

SCRIPT = """
(function(){
function lines(sec){return sec.querySelectorAll('details.line');}
function apply(sec){
  var q=sec.querySelector('input.filter').value.toLowerCase();
  var kind=sec.querySelector('select.kind').value;
  var n=0;
  lines(sec).forEach(function(d){
    var hit=(!q||d.textContent.toLowerCase().indexOf(q)>=0)&&(!kind||d.classList.contains(kind));
    d.hidden=!hit; if(hit){n++;}
  });
  sec.querySelector('.shown').textContent=(q||kind)?n.toLocaleString()+' shown':'';
}
document.addEventListener('click',function(e){
  var b=e.target.closest('button[data-act]'); if(!b){return;}
  var open=b.getAttribute('data-act')==='expand';
  lines(b.closest('section')).forEach(function(d){if(!d.hidden){d.open=open;}});
});
document.addEventListener('input',function(e){
  var f=e.target.closest('input.filter,select.kind'); if(f){apply(f.closest('section'));}
});
})();
"""
