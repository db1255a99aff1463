"""The web page at ``/``: what each model is serving, how it was checked, and a try-it form.

Rendered on the server from the registry's status; every string from a bundle or a
store is HTML-escaped, and the page's one script is served from ``/page.js`` under
a Content-Security-Policy that allows no inline script. The try-it form is built
from the serving version's input signature (a field per input or column) and
posts to the same endpoints clients use.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from typing import Any

__all__ = ["CSP", "PAGE_JS", "render_page"]

CSP = "default-src 'self'; script-src 'self'; style-src 'unsafe-inline'; object-src 'none'"

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:left;vertical-align:top}code{font-size:.9em}.bad{color:#a00}.ok{color:#070}
section{border-top:2px solid #888;margin-top:1.5rem}textarea{width:30rem;height:3rem}
pre{background:#f4f4f4;padding:.5rem;max-width:60rem;overflow:auto}
"""

PAGE_JS = """
"use strict";
function shapeOf(v){const s=[];while(Array.isArray(v)){s.push(v.length);v=v[0];}return s;}
async function tryIt(form){
  const name=form.dataset.model, out=document.getElementById("result-"+name);
  const spec=JSON.parse(form.dataset.spec);
  let url, body;
  try{
    if(spec.columns){
      const rec={};
      for(const c of spec.columns){rec[c.name]=JSON.parse(form.elements[c.name].value);}
      url="/v2/models/"+encodeURIComponent(name)+"/predict"; body={records:[rec]};
    }else{
      const inputs=[];
      for(const i of spec.inputs){
        const data=JSON.parse(form.elements[i.name].value);
        inputs.push({name:i.name,datatype:i.datatype,shape:shapeOf(data),data:data.flat(Infinity)});
      }
      url="/v2/models/"+encodeURIComponent(name)+"/infer"; body={inputs:inputs};
    }
  }catch(e){out.textContent="not JSON: "+e.message;out.dataset.status="client";return;}
  const r=await fetch(url,{method:"POST",headers:{"Content-Type":"application/json"},
                           body:JSON.stringify(body)});
  const text=await r.text();
  out.dataset.status=String(r.status);
  out.dataset.digest=r.headers.get("X-Model-Digest")||"";
  out.textContent="HTTP "+r.status+" from version "+(r.headers.get("X-Model-Version")||"-")+
    " "+(r.headers.get("X-Model-Digest")||"")+"\\n"+text;
}
document.addEventListener("submit",ev=>{ev.preventDefault();tryIt(ev.target);});
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _when(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return ""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _signers(info: dict[str, Any]) -> str:
    if not info["signers"]:
        return '<span class="bad">unsigned (allowed by this server\'s policy)</span>'
    parts = []
    for s in info["signers"]:
        who = (
            s.get("certificate", {}).get("subject")
            if isinstance(s.get("certificate"), dict)
            else None
        )
        parts.append(
            f"<code>{_e(s['key_id'][:16])}</code> {_e(s['key_type'])}"
            + (f" ({_e(who)})" if who else "")
        )
    return "<br>".join(parts)


def _parity(p: dict[str, Any] | None) -> str:
    if p is None:
        return "not measured (no sample input at export)"
    worst = max((o["max_abs"] for o in p["outputs"]), default=0.0)
    mark = (
        '<span class="ok">within tolerance</span>'
        if p["passed"]
        else '<span class="bad">MISMATCH accepted at export</span>'
    )
    return (
        f"{mark}: max |diff| {worst:.3g} on {p['sample_rows']} rows "
        f"(atol {p['tolerance']['atol']:g}, rtol {p['tolerance']['rtol']:g})"
    )


def _form(name: str, manifest: Any) -> str:
    from .protocol import V2_DATATYPES

    if manifest.columns:
        specs = {s.name: s for s in manifest.inputs}
        spec = {"columns": [{"name": c.name, "kind": c.kind} for c in manifest.columns]}
        fields = [
            (c.name, '""' if specs[c.input].dtype == "string" else "0", f"column, {c.kind}")
            for c in manifest.columns
        ]
    else:
        spec = {
            "inputs": [{"name": s.name, "datatype": V2_DATATYPES[s.dtype]} for s in manifest.inputs]
        }
        fields = []
        for s in manifest.inputs:
            value: Any = "" if s.dtype == "string" else (False if s.dtype == "bool" else 0)
            for d in reversed(s.shape or [1]):
                value = [value] * (d if isinstance(d, int) else 1)
            shape = ", ".join(str(d) if isinstance(d, int) else str(d or "N") for d in s.shape)
            fields.append((s.name, json.dumps(value), f"{V2_DATATYPES[s.dtype]} [{shape}]"))
    rows = "".join(
        f'<tr><td><label for="in-{_e(name)}-{_e(n)}">{_e(n)}</label></td>'
        f'<td><textarea id="in-{_e(name)}-{_e(n)}" name="{_e(n)}">{_e(v)}</textarea>'
        f"</td><td>{_e(what)}</td></tr>"
        for n, v, what in fields
    )
    return (
        f'<form class="try" data-model="{_e(name)}" data-spec="{_e(json.dumps(spec))}">'
        f'<table>{rows}</table><button type="submit" id="try-{_e(name)}">Run</button></form>'
        f'<pre id="result-{_e(name)}" data-status=""></pre>'
    )


def _history(status: dict[str, Any], history: list[dict[str, Any]]) -> str:
    rows = []
    for h in history[:20]:
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{_e(h.get(k, ''))}</td>"
                for k in ("seq", "action", "version", "digest", "signer", "time")
            )
            + "</tr>"
        )
    alias = (
        (
            "<table><tr><th>seq</th><th>action</th><th>version</th><th>digest</th>"
            "<th>signer</th><th>time</th></tr>" + "".join(rows) + "</table>"
        )
        if rows
        else "<p>no alias history (a file source)</p>"
    )
    events = "".join(
        f"<li>{_e(_when(ev.get('time')))} {_e(ev['event'])} "
        f"{_e((ev.get('digest') or '')[:19])} {_e(ev.get('version', ''))} "
        f"{_e(ev.get('error') or ev.get('reason') or '')} {_e(ev.get('rollback', ''))}</li>"
        for ev in status["events"][:20]
    )
    return f"<h3>Alias history</h3>{alias}<h3>Events here</h3><ul>{events}</ul>"


def render_page(models: list[tuple[dict[str, Any], Any, list[dict[str, Any]]]]) -> str:
    """The page for ``(status, serving manifest or None, alias history)`` per model."""
    sections = []
    for status, manifest, history in models:
        name = status["name"]
        cur = status["current"]
        if cur is None:
            body = f'<p class="bad" id="state-{_e(name)}">not serving ({_e(status["state"])})</p>'
        else:
            fail = status["last_failure"]
            body = (
                f'<table id="model-{_e(name)}">'
                f'<tr><th>state</th><td id="state-{_e(name)}">{_e(status["state"])}</td></tr>'
                f'<tr><th>version</th><td id="version-{_e(name)}">{_e(cur["version"])}</td></tr>'
                f'<tr><th>digest</th><td><code id="digest-{_e(name)}">{_e(cur["digest"])}'
                "</code></td></tr>"
                f'<tr><th>signed by</th><td id="signers-{_e(name)}">{_signers(cur)}</td></tr>'
                f'<tr><th>parity</th><td id="parity-{_e(name)}">{_parity(cur["parity"])}'
                "</td></tr>"
                f'<tr><th>smoke test</th><td id="smoke-{_e(name)}">{_e(cur["smoke"])}</td></tr>'
                f"<tr><th>live since</th><td>{_e(_when(cur['loaded_at']))}</td></tr>"
                f"<tr><th>requests / errors / p99</th><td>{cur['requests']} / {cur['errors']} / "
                f"{_e(cur['p99_ms'])} ms</td></tr>"
                f"<tr><th>source</th><td>{_e(status['source'])}</td></tr>"
                + (
                    f'<tr><th>last refused</th><td class="bad" id="failure-{_e(name)}">'
                    f"{_e(fail['stage'])}: {_e(fail['error'])}</td></tr>"
                    if fail
                    else ""
                )
                + "</table>"
                + "<h3>Try it</h3>"
                + _form(name, manifest)
            )
        sections.append(f"<section><h2>{_e(name)}</h2>{body}{_history(status, history)}</section>")
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>model-bundle server'
        f'</title><style>{_STYLE}</style><script src="/page.js" defer></script></head>'
        "<body><h1>model-bundle server</h1><p>Every version below was verified under this "
        'server\'s trust policy before it went live. <a href="/openapi.json">OpenAPI</a> '
        '&middot; <a href="/metrics">metrics</a></p>' + "".join(sections) + "</body></html>"
    )
