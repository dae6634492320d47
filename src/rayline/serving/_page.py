"""The page at ``/``: try the served model in a browser. Plain HTML and JavaScript, no build step.

A model whose data kind lists form fields (a table: one per feature) gets a form; one that lists
none (images) gets a canvas to draw on, sent as a PNG that the data kind decodes and resizes like
the training images.
Both call ``POST /predict`` and show the label and the class probabilities, and say so when an
answer is slow because the model is waking (a service that scales to zero replicas).
After a prediction the page asks ``POST /explain`` about the run that answered: a table model's
answer shows each feature's signed contribution (sorted by size), an image model's a saliency
map beside the canvas; a model without explanations (a 400) shows nothing more.
"""

from __future__ import annotations

import html
import json
from typing import Any

_STYLE = """
body{font-family:sans-serif;max-width:760px;margin:2em auto;color:#222}
button{font-size:1em;padding:.4em 1.2em;margin:.3em .3em .3em 0}
#result{font-size:1.3em;margin:1em 0;min-height:1.5em}
.bar{background:#4a7fd4;height:1em;display:inline-block;vertical-align:middle}
td{padding:2px 8px}
.drift{color:#b3261e;font-weight:bold}
#explain .pos{background:#2a9d4b}
#explain .neg{background:#d1495b}
#explain caption{text-align:left;padding:.6em 0 .3em}
#saliency{margin-left:12px}
"""

_SHOW = """
function show(body, ok) {
  const result = document.getElementById('result');
  const probs = document.getElementById('probs');
  probs.innerHTML = '';
  if (!ok) { result.textContent = 'error: ' + (body.error || JSON.stringify(body)); return; }
  const p = body.predictions[0];
  if ('prediction' in p) { result.textContent = 'prediction: ' + p.prediction.toFixed(4); return; }
  result.textContent = 'label: ' + p.label + '  (probability ' + p.probability.toFixed(3) + ')';
  const table = p.probabilities || {[String(p.label)]: p.probability};
  for (const [name, value] of Object.entries(table)) {
    const row = probs.insertRow();
    row.insertCell().textContent = name;
    row.insertCell().innerHTML = '<span class="bar" style="width:' + Math.round(value * 300) + 'px"></span> '
      + value.toFixed(3);
  }
}
async function send(body) {
  const result = document.getElementById('result');
  result.textContent = 'predicting...';
  // A service that scales to zero answers its first request once a replica has started.
  const slow = setTimeout(() => { result.textContent = WAKING; }, 1000);
  try {
    const response = await fetch('predict', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                             body: JSON.stringify(body)});
    const answer = await response.json();
    show(answer, response.ok);
    explain(response.ok ? body : null, answer.model);
    showDrift();
  } catch (err) {
    show({error: String(err)}, false);
  } finally {
    clearTimeout(slow);
  }
}
"""
_EXPLAIN = """
function fixed(v) { return typeof v === 'number' ? v.toFixed(4) : String(v); }
function showContributions(e, record) {
  const table = document.getElementById('explain');
  const rows = Object.entries(e.contributions).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
  const largest = Math.max(1e-12, ...rows.map(([, c]) => Math.abs(c)));
  table.createCaption().textContent = "Why: each feature's contribution to the margin (bias "
    + fixed(e.bias) + ' + contributions = margin ' + fixed(e.margin) + ')';
  const head = table.createTHead().insertRow();
  for (const name of ['feature', 'value', 'contribution']) head.insertCell().textContent = name;
  const rowsBody = table.createTBody();
  for (const [name, c] of rows) {
    const row = rowsBody.insertRow();
    row.className = 'feature';
    row.insertCell().textContent = name;
    row.insertCell().textContent = record && name in record ? String(record[name]) : '';
    const bar = document.createElement('span');
    bar.className = 'bar ' + (c >= 0 ? 'pos' : 'neg');
    bar.style.width = Math.round(Math.abs(c) / largest * 150) + 'px';
    const cell = row.insertCell();
    cell.append(bar, ' ' + (c >= 0 ? '+' : '') + c.toFixed(4));
  }
  table.hidden = false;
}
function showSaliency(e) {
  const map = document.getElementById('saliency');
  if (!map) return;
  const ctx = map.getContext('2d');
  const h = e.saliency.length, w = e.saliency[0].length;
  ctx.fillStyle = '#000'; ctx.fillRect(0, 0, map.width, map.height);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    ctx.fillStyle = 'rgba(255,140,0,' + e.saliency[y][x] + ')';
    ctx.fillRect(x * map.width / w, y * map.height / h, map.width / w + 1, map.height / h + 1);
  }
  map.hidden = false;
}
async function explain(body, model) {
  const table = document.getElementById('explain');
  const map = document.getElementById('saliency');
  table.innerHTML = ''; table.hidden = true;
  if (map) map.hidden = true;
  if (body === null) return;
  try {
    // The run that answered /predict (it may be a canary) is the one asked why.
    const response = await fetch('explain', {method: 'POST', body: JSON.stringify(body),
      headers: {'Content-Type': 'application/json', 'serve_multiplexed_model_id': model}});
    if (!response.ok) return;  // no explanations for this model: the page shows the prediction only
    const e = (await response.json()).explanations[0];
    if (e && e.contributions) showContributions(e, Array.isArray(body) ? body[0] : null);
    else if (e && e.saliency) showSaliency(e);
  } catch (err) {
    // an explanation is extra: a failed one leaves the prediction as it is
  }
}
"""
_DRIFT = """
async function showDrift() {
  // Asked after a prediction, never on load: /healthz would wake a model that scales to zero.
  const line = document.getElementById('drift');
  try {
    const d = (await (await fetch('healthz')).json()).drift;
    if (!d) { line.hidden = true; return; }
    if (!d.psi) { line.textContent = 'input drift: ' + d.status; }
    else if (d.status === 'drift') {
      const named = d.flagged.map(f => f + ' (PSI ' + d.psi[f].toFixed(2) + ')');
      if (d.prediction_flagged) named.push('predictions (PSI ' + d.prediction_psi.toFixed(2) + ')');
      line.textContent = 'input drift: ' + named.join(', ') + ' over ' + d.threshold + ', in the last '
        + d.rows + ' rows served';
      line.className = 'drift';
    } else {
      const largest = Math.max(...Object.values(d.psi));
      line.textContent = 'inputs look like the training data (largest PSI ' + largest.toFixed(3) + ', '
        + d.rows + ' rows served)';
      line.className = '';
    }
    line.hidden = false;
  } catch (err) {
    line.hidden = true;  // drift is extra: the prediction stands without it
  }
}
"""
WAKING = "waking the model: this service scales to zero replicas when idle, and one is starting..."
SLOW = "still predicting..."

_CANVAS = """
<p>Draw a digit (or anything the model knows) in the box, then press Predict.</p>
<canvas id="pad" width="280" height="280" style="background:#000;cursor:crosshair;touch-action:none"></canvas>\
<canvas id="saliency" width="280" height="280" hidden title="saliency: the pixels the prediction rests on"></canvas><br>
<button id="predict">Predict</button><button id="clear">Clear</button>
<script>
const pad = document.getElementById('pad');
const ctx = pad.getContext('2d');
function clearPad() { ctx.fillStyle = '#000'; ctx.fillRect(0, 0, pad.width, pad.height); }
clearPad();
ctx.strokeStyle = '#fff'; ctx.lineWidth = 22; ctx.lineCap = 'round'; ctx.lineJoin = 'round';
let drawing = false;
function at(e) { const r = pad.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
pad.addEventListener('pointerdown', e => { drawing = true; ctx.beginPath(); ctx.moveTo(...at(e)); });
pad.addEventListener('pointermove', e => { if (drawing) { ctx.lineTo(...at(e)); ctx.stroke(); } });
window.addEventListener('pointerup', () => { drawing = false; });
document.getElementById('clear').onclick = () => { clearPad(); show({predictions: []}, true); };
document.getElementById('predict').onclick = () => send({image: [pad.toDataURL('image/png')]});
</script>
"""


def _form(fields: list[dict[str, Any]]) -> str:
    rows = []
    for field in fields:
        name = html.escape(field["name"])
        kind = "number" if field["type"] in ("number", "integer") else "text"
        step = " step='any'" if field["type"] == "number" else ""
        value = html.escape(str(field.get("example", "")))
        rows.append(
            f"<tr><td><label for='{name}'>{name}</label></td><td><input id='{name}' name='{name}' "
            f"type='{kind}'{step} value='{value}' required></td></tr>"
        )
    types = json.dumps({f["name"]: f["type"] for f in fields})
    return f"""
<p>Fill in a record, then press Predict.</p>
<form id="record"><table>{"".join(rows)}</table><button type="submit">Predict</button></form>
<script>
const types = {types};
document.getElementById('record').onsubmit = e => {{
  e.preventDefault();
  const record = {{}};
  for (const [name, type] of Object.entries(types)) {{
    const raw = document.getElementById(name).value;
    record[name] = type === 'integer' ? parseInt(raw, 10) : type === 'number' ? parseFloat(raw)
      : type === 'boolean' ? raw === 'true' : raw;
  }}
  send([record]);
}};
</script>
"""


def render(*, title: str, model_run_id: str, fields: list[dict[str, Any]] | None, scales_to_zero: bool = False) -> str:
    """The page for an image model (``fields`` None) or a table model (one entry per feature).

    ``scales_to_zero``: a slow answer is the model waking (``serve.autoscaling.min_replicas: 0``)."""
    body = _CANVAS if fields is None else _form(fields)
    waiting = f"const WAKING = {json.dumps(WAKING if scales_to_zero else SLOW)};"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>model run <code>{html.escape(model_run_id)}</code> &middot; <a href="docs">API docs</a></p>
{body}
<div id="result"></div><table id="probs"></table><table id="explain" hidden></table>
<p id="drift" hidden></p>
<script>{waiting}{_SHOW}{_EXPLAIN}{_DRIFT}</script>
</body></html>
"""
