// The Trellis dashboard page. Plain JavaScript, no framework, no build step.
//
// Everything the lattice sends (names, labels, images, messages) is put on the page as text
// (textContent, createTextNode, setAttribute), never parsed as markup, and control characters
// are shown escaped (\u{1b}, \n) as `wash` shows them. Actions go to the backend as POSTs
// carrying the session token of this page; every one asks for confirmation first.
'use strict';
(() => {
  const TOKEN = document.querySelector('meta[name="trellis-token"]').getAttribute('content');
  const FEED_CAP = 500;
  const CALLS_CAP = 200;
  const LINES_SHOWN = 5000;
  const SVG = 'http://www.w3.org/2000/svg';

  const state = {
    lattice: '', natsUrl: '', connected: false, message: '', backendUp: true,
    hosts: new Map(), links: [], unreadable: 0, apps: new Map(),
    events: [], eventTypes: new Set(), caps: { max_manifest_bytes: 1048576 },
    received: new Map(), // host id -> [uptime seconds, when received]
    spy: null, spyOf: '', calls: [], selectedLink: null,
  };
  const $ = (sel, root = document) => root.querySelector(sel);

  // Control characters (and bidi overrides) shown as escapes, so text cannot forge layout.
  const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]/g;
  function shown(value) {
    return String(value ?? '').replace(UNSAFE, (c) => {
      if (c === '\n') return '\\n';
      if (c === '\r') return '\\r';
      if (c === '\t') return '\\t';
      return '\\u{' + c.codePointAt(0).toString(16) + '}';
    });
  }

  // el('td', {class: 'x', onclick: f}, 'text', child…): an element; strings become text nodes.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(shown(c)) : c);
    }
    return e;
  }
  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG, tag);
    setAttrs(e, attrs);
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.append(typeof c === 'string' ? document.createTextNode(shown(c)) : c);
    }
    return e;
  }
  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, String(v));
    }
  }
  function badge(text, cls) { return el('span', { class: 'badge ' + (cls || '') }, text); }

  // ---- talking to the backend ----
  async function post(path, body, asText) {
    const r = await fetch(path, {
      method: 'POST',
      headers: { 'X-Trellis-Token': TOKEN, 'Content-Type': asText ? 'text/plain; charset=utf-8' : 'application/json' },
      body: asText ? body : JSON.stringify(body || {}),
    });
    let v;
    try { v = await r.json(); } catch (_) { v = { error: `the dashboard answered ${r.status} without a reason` }; }
    if (!r.ok && r.status !== 422) throw new Error(v.error || `the dashboard answered ${r.status}`);
    return { status: r.status, body: v };
  }

  async function loadState() {
    try {
      const r = await fetch('/api/state');
      const s = await r.json();
      state.lattice = s.lattice; state.natsUrl = s.nats_url; state.connected = s.connected; state.message = s.message;
      state.caps = s.caps || state.caps;
      state.hosts = new Map(s.hosts.map((h) => [h.inventory.host_id, h]));
      for (const h of s.hosts) noteUptime(h);
      state.links = s.links; state.unreadable = s.unreadable_links;
      state.apps = new Map(s.apps.map((a) => [a.name, a]));
      state.backendUp = true;
      renderAll();
    } catch (e) {
      state.backendUp = false;
      renderBanner();
    }
  }

  let source = null;
  function connectEvents() {
    if (source) source.close();
    source = new EventSource('/api/events');
    source.addEventListener('open', () => { state.backendUp = true; loadState(); });
    source.addEventListener('error', () => {
      state.backendUp = false;
      renderBanner();
      // A refused stream (too many tabs, backend restarted) is not retried by the browser.
      if (source.readyState === EventSource.CLOSED) setTimeout(connectEvents, 3000);
    });
    const on = (name, f) => source.addEventListener(name, (m) => { try { f(JSON.parse(m.data)); } catch (e) { console.error(name, e); } });
    on('connection', (c) => {
      const was = state.connected;
      state.connected = c.connected; state.message = c.message;
      renderBanner();
      if (c.connected && !was) loadState();
    });
    on('resync', () => loadState());
    on('host', (m) => { state.hosts.set(m.host_id, m.host); noteUptime(m.host); scheduleRender('hosts'); });
    on('links', (m) => { state.links = m.links; state.unreadable = m.unreadable_links; scheduleRender('links'); });
    on('apps', (m) => { state.apps = new Map(m.apps.map((a) => [a.name, a])); scheduleRender('apps'); });
    on('app', (m) => {
      const a = state.apps.get(m.name);
      if (a) { a.detailed_status = m.status; a.status = m.status.status.type; scheduleRender('apps'); }
    });
    on('lattice', (e) => {
      state.events.unshift(e);
      if (state.events.length > FEED_CAP) state.events.length = FEED_CAP;
      if (!state.eventTypes.has(e.type)) { state.eventTypes.add(e.type); renderTypeFilter(); }
      scheduleRender('events');
    });
  }

  const pending = new Set();
  function scheduleRender(what) {
    if (pending.size === 0) requestAnimationFrame(() => {
      const todo = [...pending]; pending.clear();
      for (const w of todo) ({ hosts: renderHosts, links: renderLinks, apps: renderApps, events: renderEvents })[w]();
      renderCounts();
    });
    pending.add(what);
  }

  // Keeps keyboard focus across a re-render: the element with the same data-key gets it back.
  function keepingFocus(f) {
    const key = document.activeElement && document.activeElement.getAttribute && document.activeElement.getAttribute('data-key');
    f();
    if (key) {
      const again = [...document.querySelectorAll('[data-key]')].find((e) => e.getAttribute('data-key') === key);
      if (again && again !== document.activeElement) again.focus();
    }
  }

  // ---- hosts ----
  function noteUptime(h) {
    // The inventory is the fresher: heartbeats renew it, pings only every 10 s.
    const secs = h.inventory.uptime_seconds || (h.info && h.info.uptime_seconds) || 0;
    state.received.set(h.inventory.host_id, [secs, Date.now()]);
  }
  function human(secs) {
    secs = Math.max(0, Math.floor(secs));
    const d = Math.floor(secs / 86400), hh = Math.floor(secs % 86400 / 3600), m = Math.floor(secs % 3600 / 60), s = secs % 60;
    return [d && `${d}d`, (d || hh) && `${hh}h`, (d || hh || m) && `${m}m`, `${s}s`].filter(Boolean).join(' ');
  }
  function tickUptimes() {
    for (const e of document.querySelectorAll('.uptime[data-host]')) {
      const r = state.received.get(e.getAttribute('data-host'));
      if (!r) continue;
      const host = state.hosts.get(e.getAttribute('data-host'));
      e.textContent = host && host.gone ? 'gone' : human(r[0] + (Date.now() - r[1]) / 1000);
    }
  }
  function zoneOf(labels) {
    const z = labels.zone ?? labels.location ?? labels.region;
    if (z === undefined) return null;
    return { value: z, cls: String(z).toLowerCase().includes('edge') ? 'edge' : 'cloud' };
  }
  function hostName(id) {
    const h = state.hosts.get(id);
    return h && h.inventory.friendly_name ? h.inventory.friendly_name : id;
  }
  const ADDR = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$/;
  function metricsUrl(addr) {
    if (!addr || !ADDR.test(addr)) return null;
    const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), addr.slice(addr.lastIndexOf(':') + 1)];
    const reachable = host === '0.0.0.0' || host === '[::]' ? location.hostname : host;
    return `http://${reachable.includes(':') && !reachable.startsWith('[') ? `[${reachable}]` : reachable}:${port}/metrics`;
  }

  function hostCard(h) {
    const inv = h.inventory;
    const id = inv.host_id;
    const labels = inv.labels || (h.info && h.info.labels) || {};
    const zone = zoneOf(labels);
    const schedule = inv.schedule || 'schedulable';
    const info = h.info || {};
    const card = el('article', { class: `card host ${zone ? zone.cls : ''} ${h.gone ? 'gone' : ''}`, 'data-host': id, 'aria-label': `host ${shown(inv.friendly_name || id)}` });
    card.append(el('h3', {},
      el('span', { class: 'name' }, inv.friendly_name || id),
      zone && badge(`${zone.cls === 'edge' ? 'edge' : 'cloud'} · zone=${shown(zone.value)}`, zone.cls),
      h.gone ? badge('gone', 'gone') : badge(schedule, schedule),
    ));
    card.append(el('div', { class: 'id' }, id));
    const metrics = metricsUrl(info.admin_addr);
    card.append(el('dl', { class: 'facts' },
      el('dt', {}, 'Version'), el('dd', {}, inv.version || info.version || '-'),
      el('dt', {}, 'Uptime'), el('dd', { class: 'uptime', 'data-host': id }, h.gone ? 'gone' : human(inv.uptime_seconds || info.uptime_seconds || 0)),
      el('dt', {}, 'JetStream domain'), el('dd', {}, info.js_domain || 'none (the default)'),
      el('dt', {}, 'Metrics'), el('dd', {}, metrics ? el('a', { href: metrics, target: '_blank', rel: 'noopener noreferrer', 'data-key': `metrics:${id}` }, `${info.admin_addr}/metrics`) : 'no admin endpoint (--http-admin)'),
    ));
    const keys = Object.keys(labels).sort((a, b) => (a.startsWith('hostcore.') - b.startsWith('hostcore.')) || a.localeCompare(b));
    card.append(el('ul', { class: 'labels', 'aria-label': 'labels' }, keys.map((k) => el('li', {}, `${k}=${labels[k]}`))));
    if (!h.gone) {
      const cordoned = schedule !== 'schedulable';
      card.append(el('div', { class: 'actions row' },
        cordoned
          ? el('button', { type: 'button', class: 'act-uncordon', 'data-key': `uncordon:${id}`, onclick: () => hostAction(id, 'uncordon') }, 'Uncordon…')
          : el('button', { type: 'button', class: 'act-cordon', 'data-key': `cordon:${id}`, onclick: () => hostAction(id, 'cordon') }, 'Cordon…'),
        schedule === 'draining' || schedule === 'drained' ? null
          : el('button', { type: 'button', class: 'act-drain danger', 'data-key': `drain:${id}`, onclick: () => hostAction(id, 'drain') }, 'Drain…'),
      ));
    }
    const comps = [...(inv.components || [])].sort((a, b) => a.id.localeCompare(b.id));
    card.append(el('div', { class: 'table-wrap' }, el('table', { class: 'components' },
      el('caption', { class: 'sr-only' }, 'Components'),
      el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, `Components (${comps.length})`), el('th', { scope: 'col' }, 'Image'), el('th', { scope: 'col' }, 'Max'), el('th', { scope: 'col' }, el('span', { class: 'sr-only' }, 'Actions')))),
      el('tbody', {}, comps.length === 0 ? el('tr', {}, el('td', { colspan: 4, class: 'muted' }, 'none')) : comps.map((c) => el('tr', { 'data-component': c.id },
        el('td', { class: 'cid' }, c.id),
        el('td', { class: 'image' }, c.image_ref),
        el('td', { class: 'num max' }, String(c.max_instances)),
        el('td', {}, el('div', { class: 'actions' },
          h.gone ? null : el('button', { type: 'button', class: 'act-scale', 'data-key': `scale:${id}:${c.id}`, onclick: () => scaleAction(id, c) }, 'Scale…'),
          el('a', { href: `#calls/${encodeURIComponent(c.id)}`, class: 'act-calls', 'data-key': `calls:${id}:${c.id}` }, 'Live calls'),
        )),
      ))),
    )));
    const provs = [...(inv.providers || [])].sort((a, b) => a.id.localeCompare(b.id));
    card.append(el('div', { class: 'table-wrap' }, el('table', { class: 'providers' },
      el('caption', { class: 'sr-only' }, 'Providers'),
      el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, `Providers (${provs.length})`), el('th', { scope: 'col' }, 'Image'))),
      el('tbody', {}, provs.length === 0 ? el('tr', {}, el('td', { colspan: 2, class: 'muted' }, 'none')) : provs.map((p) => el('tr', { 'data-provider': p.id },
        el('td', { class: 'pid' }, p.id), el('td', { class: 'image' }, p.image_ref || '-'),
      ))),
    )));
    return card;
  }

  function renderHosts() {
    const box = $('#hosts');
    const hosts = [...state.hosts.values()].sort((a, b) => (a.gone - b.gone) || (a.inventory.friendly_name || '').localeCompare(b.inventory.friendly_name || '') || a.inventory.host_id.localeCompare(b.inventory.host_id));
    keepingFocus(() => {
      if (hosts.length === 0) {
        box.replaceChildren(el('p', { class: 'muted' }, state.connected ? `No hosts answer in lattice ${state.lattice}; start one with \`wash up\`.` : 'No hosts known yet.'));
        return;
      }
      const existing = new Map([...box.querySelectorAll('article.host')].map((c) => [c.getAttribute('data-host'), c]));
      const cards = hosts.map((h) => {
        // A card is rebuilt only when what it shows changed (uptime ticks on its own).
        const sig = JSON.stringify([h.gone, h.inventory.friendly_name, h.inventory.labels, h.inventory.version, h.inventory.schedule, h.inventory.components, h.inventory.providers, h.info && [h.info.js_domain, h.info.admin_addr, h.info.version]]);
        const old = existing.get(h.inventory.host_id);
        if (old && old.getAttribute('data-sig') === sig) return old;
        const card = hostCard(h);
        card.setAttribute('data-sig', sig);
        return card;
      });
      box.replaceChildren(...cards);
    });
    tickUptimes();
  }

  async function confirmAction(title, text, extra) {
    const d = $('#confirm');
    $('#confirm-title').textContent = shown(title);
    $('#confirm-text').textContent = shown(text);
    $('#confirm-extra').replaceChildren(...(extra ? [extra] : []));
    const back = document.activeElement;
    return new Promise((resolve) => {
      const done = (ok) => {
        $('#confirm-ok').onclick = null; $('#confirm-cancel').onclick = null; d.oncancel = null;
        d.close();
        if (back && back.isConnected) back.focus();
        resolve(ok);
      };
      $('#confirm-ok').onclick = () => done(true);
      $('#confirm-cancel').onclick = () => done(false);
      d.oncancel = (e) => { e.preventDefault(); done(false); };
      d.showModal();
      const first = extra && extra.querySelector('input');
      (first || $('#confirm-cancel')).focus();
    });
  }

  function toast(text, bad) {
    const m = el('div', { class: 'msg' + (bad ? ' bad' : ''), role: bad ? 'alert' : 'status' }, text);
    const box = $('#toast');
    box.append(m);
    while (box.children.length > 3) box.firstElementChild.remove();
    setTimeout(() => m.remove(), bad ? 12000 : 5000);
  }

  const ACTION_TEXT = {
    cordon: 'It keeps what it runs, but gets no new placements and bids in no auction.',
    uncordon: 'It takes new placements again.',
    drain: 'It is cordoned; the app reconciler starts its managed replicas elsewhere, then stops them here once their in-flight requests are answered.',
  };
  async function hostAction(id, action) {
    const name = hostName(id);
    if (!await confirmAction(`${action[0].toUpperCase()}${action.slice(1)} host ${name}?`, `${ACTION_TEXT[action]} (host ${id})`)) return;
    try {
      const r = await post(`/api/hosts/${encodeURIComponent(id)}/${action}`, {});
      toast(`Host ${name} is ${r.body.schedule}`);
    } catch (e) { toast(`${action} of host ${name} failed: ${e.message}`, true); }
  }

  async function scaleAction(hostId, c) {
    const input = el('input', { type: 'number', id: 'scale-count', min: 0, max: 100000, value: c.max_instances, required: true });
    const extra = el('label', {}, 'Max instances (0 stops it) ', input);
    if (!await confirmAction(`Scale ${c.id}?`, `Set how many instances of ${c.id} may run at once on host ${hostName(hostId)}.`, extra)) return;
    const n = Number(input.value);
    if (!Number.isInteger(n) || n < 0 || n > 4294967295) { toast(`“${input.value}” is not a whole number of instances`, true); return; }
    toast(`Scaling ${c.id} on ${hostName(hostId)} to ${n}…`);
    try {
      await post('/api/scale', { host_id: hostId, component_id: c.id, max_instances: n });
      toast(`${c.id} on ${hostName(hostId)} now has max instances ${n}`);
    } catch (e) { toast(`Scaling ${c.id} failed: ${e.message}`, true); }
  }

  // ---- links ----
  function linkLabel(l) {
    const name = l.name && l.name !== 'default' ? ` (${l.name})` : '';
    return `${l.wit_namespace}:${l.wit_package}/${(l.interfaces || []).join(',')}${name}`;
  }
  function isProvider(id) {
    for (const h of state.hosts.values()) if ((h.inventory.providers || []).some((p) => p.id === id)) return true;
    return false;
  }
  function renderLinks() {
    const links = state.links;
    const g = $('#graph');
    const sources = new Set(links.map((l) => l.source_id)), targets = new Set(links.map((l) => l.target));
    const cols = [[], [], []];
    for (const id of [...new Set([...sources, ...targets])].sort()) {
      cols[sources.has(id) && targets.has(id) ? 1 : sources.has(id) ? 0 : 2].push(id);
    }
    const used = cols.filter((c) => c.length > 0);
    const longest = Math.max(0, ...links.map((l) => linkLabel(l).length));
    const NW = 210, NH = 30, GAP = 54, PAD = 20;
    const COLW = NW + Math.max(160, Math.min(520, longest * 6.6 + 40));
    const pos = new Map();
    used.forEach((col, ci) => col.forEach((id, i) => pos.set(id, { x: PAD + ci * COLW, y: PAD + i * GAP })));
    const rows = Math.max(1, ...used.map((c) => c.length));
    const width = PAD * 2 + Math.max(0, used.length - 1) * COLW + NW;
    const backLinks = links.some((l) => pos.get(l.target).x <= pos.get(l.source_id).x);
    const height = PAD * 2 + (rows - 1) * GAP + NH + (backLinks ? 70 : 0);
    g.setAttribute('viewBox', `0 0 ${width} ${height}`);
    g.setAttribute('width', String(width));
    g.setAttribute('height', String(height));
    const defs = svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, svg('path', { d: 'M 0 0 L 10 5 L 0 10 z' })));
    const edges = links.map((l, i) => {
      const a = pos.get(l.source_id), b = pos.get(l.target);
      const same = links.slice(0, i).filter((o) => o.source_id === l.source_id && o.target === l.target).length;
      const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2;
      const back = x2 <= x1;
      const d = back
        ? `M ${a.x + NW / 2} ${a.y + NH} C ${a.x + NW / 2} ${y1 + 60 + same * 14}, ${b.x + NW / 2} ${y2 + 60 + same * 14}, ${b.x + NW / 2} ${b.y + NH}`
        : `M ${x1} ${y1} C ${x1 + 60} ${y1}, ${x2 - 60} ${y2}, ${x2} ${y2}`;
      const lx = back ? (a.x + b.x + NW) / 2 : (x1 + x2) / 2, ly = (back ? Math.max(y1, y2) + 50 : (y1 + y2) / 2 - 8) + same * 13;
      const key = `link:${l.source_id}:${l.target}:${l.wit_namespace}:${l.wit_package}:${l.name}`;
      return svg('g', {
        class: 'edge' + (state.selectedLink === key ? ' selected' : ''), tabindex: 0, role: 'button', 'data-key': key,
        'aria-label': `link ${shown(l.source_id)} to ${shown(l.target)}, ${shown(linkLabel(l))}`,
        onclick: () => selectLink(l, key),
        onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); selectLink(l, key); } },
      }, svg('path', { d, 'marker-end': 'url(#arrow)' }), svg('text', { x: lx, y: ly, 'text-anchor': 'middle' }, linkLabel(l)));
    });
    const nodes = [...pos.entries()].map(([id, p]) => svg('g', { class: 'node ' + (isProvider(id) ? 'provider' : 'component') },
      svg('title', {}, id),
      svg('rect', { x: p.x, y: p.y, width: NW, height: NH, rx: 6 }),
      svg('text', { x: p.x + 10, y: p.y + 20 }, id.length > 26 ? id.slice(0, 25) + '…' : id)));
    keepingFocus(() => {
      g.replaceChildren(defs, ...edges, ...nodes);
      if (links.length === 0) g.append(svg('text', { x: PAD, y: PAD + 20, class: 'empty' }, 'No links yet (wash link put, or an app manifest).'));
      const body = $('#links-table tbody');
      body.replaceChildren(...(links.length === 0 ? [el('tr', {}, el('td', { colspan: 5, class: 'muted' }, 'none'))] : links.map((l) => {
        const key = `row:link:${l.source_id}:${l.target}:${l.wit_namespace}:${l.wit_package}:${l.name}`;
        return el('tr', {}, el('td', {}, l.source_id), el('td', {}, l.target), el('td', {}, `${l.wit_namespace}:${l.wit_package}/${(l.interfaces || []).join(', ')}`), el('td', {}, l.name || 'default'),
          el('td', {}, el('button', { type: 'button', 'data-key': key, onclick: () => selectLink(l, key.slice(4)) }, 'Details')));
      })));
    });
    const u = $('#links-unreadable');
    u.hidden = !state.unreadable;
    u.textContent = state.unreadable ? `${state.unreadable} stored link entries cannot be read; fix or delete them with wash link del.` : '';
    if (state.selectedLink && !links.some((l) => `link:${l.source_id}:${l.target}:${l.wit_namespace}:${l.wit_package}:${l.name}` === state.selectedLink)) {
      state.selectedLink = null; $('#link-detail').hidden = true;
    }
  }
  function selectLink(l, key) {
    state.selectedLink = key;
    for (const e of document.querySelectorAll('#graph .edge')) e.classList.toggle('selected', e.getAttribute('data-key') === key);
    const list = (names) => names && names.length ? names.join(', ') : 'none';
    const p = $('#link-detail');
    p.replaceChildren(
      el('h3', {}, `${l.source_id} → ${l.target}`),
      el('dl', { class: 'facts' },
        el('dt', {}, 'Interface'), el('dd', {}, `${l.wit_namespace}:${l.wit_package}/${(l.interfaces || []).join(', ')}`),
        el('dt', {}, 'Link name'), el('dd', {}, l.name || 'default'),
        el('dt', {}, 'Source config'), el('dd', { class: 'source-config' }, list(l.source_config)),
        el('dt', {}, 'Target config'), el('dd', { class: 'target-config' }, list(l.target_config))),
      el('button', { type: 'button', onclick: () => { p.hidden = true; state.selectedLink = null; renderLinks(); } }, 'Close'));
    p.hidden = false;
  }

  // ---- apps ----
  function renderApps() {
    const body = $('#apps-table tbody');
    const apps = [...state.apps.values()].sort((a, b) => a.name.localeCompare(b.name));
    keepingFocus(() => {
      body.replaceChildren(...(apps.length === 0 ? [el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'No apps stored; deploy a manifest below.'))] : apps.map((a) => {
        const st = (a.detailed_status && a.detailed_status.status) || { type: a.status, message: a.status_message };
        const type = st.type || 'undeployed';
        const name = type[0].toUpperCase() + type.slice(1);
        const details = ((a.detailed_status && a.detailed_status.scalers) || []).map((s) => s.status && s.status.message).filter(Boolean);
        return el('tr', { 'data-app': a.name },
          el('td', {}, a.name),
          el('td', {}, a.deployed_version || '-'),
          el('td', {}, a.version || '-'),
          el('td', {}, badge(name, name)),
          el('td', { class: 'why' }, st.message || '', details.length ? el('ul', { class: 'details' }, details.map((d) => el('li', {}, d))) : null),
          el('td', {}, a.deployed_version ? el('button', { type: 'button', class: 'act-undeploy danger', 'data-key': `undeploy:${a.name}`, onclick: () => undeployAction(a.name) }, 'Undeploy…') : null));
      })));
    });
  }
  async function undeployAction(name) {
    if (!await confirmAction(`Undeploy ${name}?`, 'Every component, provider, link and config the app created is removed. Its stored versions stay.')) return;
    try { await post(`/api/apps/${encodeURIComponent(name)}/undeploy`, {}); toast(`Undeploying ${name}`); } catch (e) { toast(`Undeploy of ${name} failed: ${e.message}`, true); }
  }

  function showVerdict(text, v) {
    const verdict = $('#manifest-verdict');
    const lines = $('#manifest-lines');
    const general = document.getElementById('manifest-general');
    if (general) general.remove();
    if (v.valid) {
      verdict.className = 'verdict ok';
      verdict.textContent = shown(`Valid: app ${v.name} ${v.version || ''} (${v.components} component${v.components === 1 ? '' : 's'}, ${v.links} link${v.links === 1 ? '' : 's'})`);
      lines.hidden = true; lines.replaceChildren();
      return;
    }
    const errors = v.errors || [];
    verdict.className = 'verdict bad';
    verdict.textContent = `${errors.length} mistake${errors.length === 1 ? '' : 's'}; the manifest is not valid`;
    const all = text.split('\n');
    const atLine = new Map();
    const noLine = [];
    for (const e of errors) {
      if (e.line && e.line <= Math.min(all.length, LINES_SHOWN)) { if (!atLine.has(e.line)) atLine.set(e.line, []); atLine.get(e.line).push(e); } else noLine.push(e);
    }
    const msg = (e) => (e.path ? `${e.path}: ${e.message}` : e.message) + (e.line ? ` (line ${e.line})` : '');
    if (noLine.length) verdict.after(el('ul', { id: 'manifest-general', class: 'errors-general' }, noLine.map((e) => el('li', {}, msg(e)))));
    lines.replaceChildren(...all.slice(0, LINES_SHOWN).map((line, i) => {
      const n = i + 1;
      const errs = atLine.get(n) || [];
      return el('li', { 'data-line': n, class: errs.length ? 'has-error' : '' }, line === '' ? ' ' : line, errs.map((e) => el('span', { class: 'line-error' }, `line ${n}: ${e.path ? e.path + ': ' : ''}${e.message}`)));
    }));
    lines.hidden = false;
    const first = lines.querySelector('.has-error');
    if (first) first.scrollIntoView({ block: 'nearest' });
  }
  async function validateManifest() {
    const text = $('#manifest').value;
    if (!text.trim()) { showVerdict(text, { valid: false, errors: [{ path: '', message: 'paste or upload a manifest first' }] }); return null; }
    try {
      const r = await post('/api/apps/validate', text, true);
      showVerdict(text, r.body);
      return r.body;
    } catch (e) { toast(`Validation failed: ${e.message}`, true); return null; }
  }
  async function deployManifest() {
    const v = await validateManifest();
    if (!v || !v.valid) return;
    if (!await confirmAction(`Deploy ${v.name} ${v.version || ''}?`, `The manifest is stored as a new version of ${v.name} and deployed: ${v.components} component${v.components === 1 ? '' : 's'}, ${v.links} link${v.links === 1 ? '' : 's'}.`)) return;
    const text = $('#manifest').value;
    try {
      const r = await post('/api/apps/deploy', text, true);
      if (r.status === 422) { showVerdict(text, r.body); return; }
      toast(`Deploying ${r.body.name} ${r.body.version}; its status follows in the table`);
    } catch (e) { toast(`Deploy failed: ${e.message}`, true); }
  }

  // ---- events ----
  function renderTypeFilter() {
    const sel = $('#filter-type');
    const cur = sel.value;
    sel.replaceChildren(el('option', { value: '' }, 'any'), ...[...state.eventTypes].sort().map((t) => el('option', { value: t }, t)));
    sel.value = cur;
  }
  // An event's data as `key=value …`, leaving out empty fields; at most 300 characters.
  function summary(data) {
    let s;
    if (data && typeof data === 'object' && !Array.isArray(data)) {
      s = Object.entries(data)
        .filter(([, v]) => v !== null && v !== '' && !(typeof v === 'object' && Object.keys(v).length === 0))
        .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join('  ');
    } else {
      try { s = JSON.stringify(data); } catch (_) { s = String(data); }
    }
    return s && s.length > 300 ? s.slice(0, 299) + '…' : s || '';
  }
  // `HH:MM:SS.mmm` of an RFC 3339 time.
  function clock(t) {
    const m = /T(\d\d:\d\d:\d\d)(\.\d{1,3})?/.exec(t || '');
    return m ? m[1] + (m[2] || '') : shown(t || '');
  }
  function renderEvents() {
    if ($('#view-events').hidden) return;
    const type = $('#filter-type').value, text = $('#filter-text').value.toLowerCase(), beats = $('#filter-heartbeats').checked;
    const shownEvents = state.events.filter((e) => (beats || e.type !== 'host_heartbeat') && (!type || e.type === type)
      && (!text || `${e.type} ${e.source} ${hostName(e.source)} ${summary(e.data)}`.toLowerCase().includes(text)));
    $('#events').replaceChildren(...(shownEvents.length === 0 ? [el('li', { class: 'muted' }, state.events.length ? 'No event matches the filters.' : 'Waiting for events…')] : shownEvents.map((e) => el('li', { 'data-type': e.type },
      el('span', { class: 't' }, clock(e.time)),
      el('span', { class: 'ty' + (/failed|stopped/.test(e.type) ? ' failed' : '') }, e.type),
      el('span', { class: 'd' }, summary(e.data)),
      el('span', { class: 'src' }, `from ${hostName(e.source)}${hostName(e.source) !== e.source ? ` (${e.source})` : ''}`)))));
  }

  // ---- live calls (the spy stream) ----
  function watchCalls(id) {
    if (state.spy && state.spyOf === id) return;
    stopCalls();
    state.spyOf = id; state.calls = [];
    $('#calls-of').textContent = shown(id);
    $('#calls-hint').textContent = 'Hosts record calls while this view is open; records start within about a second.';
    $('#calls-stop').hidden = false;
    renderCalls();
    const s = new EventSource(`/api/spy/${encodeURIComponent(id)}`);
    state.spy = s;
    s.addEventListener('call', (m) => {
      try { state.calls.unshift(JSON.parse(m.data)); } catch (_) { return; }
      if (state.calls.length > CALLS_CAP) state.calls.length = CALLS_CAP;
      renderCalls();
    });
    s.addEventListener('error', () => { if (s.readyState === EventSource.CLOSED) $('#calls-hint').textContent = 'The live call view could not start (too many open, or the lattice is unreachable); reload to try again.'; });
  }
  function stopCalls() {
    if (state.spy) { state.spy.close(); state.spy = null; }
    $('#calls-stop').hidden = true;
  }
  function renderCalls() {
    const body = $('#calls-table tbody');
    body.replaceChildren(...(state.calls.length === 0 ? [el('tr', {}, el('td', { colspan: 8, class: 'muted' }, state.spyOf ? 'No calls yet.' : '—'))] : state.calls.map((r) => el('tr', { class: 'call' },
      el('td', {}, clock(r.time)),
      el('td', {}, r.target === state.spyOf ? 'in' : 'out'),
      el('td', {}, `${r.source} → ${r.target}`),
      el('td', {}, `${r.interface}.${r.function}`),
      el('td', {}, r.link_name),
      el('td', { class: 'num' }, `${(r.duration_us / 1000).toFixed(1)} ms`),
      el('td', {}, r.outcome === 'ok' ? badge('ok', 'ok') : badge(r.outcome, 'bad'), r.error ? el('div', { class: 'muted' }, r.error) : null),
      el('td', {}, `${r.route} · ${hostName(r.host_id)}`)))));
  }

  // ---- chrome: banner, counts, views ----
  function renderBanner() {
    const b = $('#banner');
    let text = '';
    if (!state.backendUp) text = 'The dashboard backend is unreachable (is `wash ui` still running?); retrying…';
    else if (!state.connected) text = `Lattice ${state.lattice || ''} unreachable: ${state.message || 'no connection to NATS'}. This page recovers by itself once it is back.`;
    b.textContent = shown(text);
    b.hidden = !text;
  }
  function renderCounts() {
    $('#count-hosts').textContent = `(${[...state.hosts.values()].filter((h) => !h.gone).length})`;
    $('#count-links').textContent = `(${state.links.length})`;
    $('#count-apps').textContent = `(${state.apps.size})`;
  }
  function renderAll() {
    $('#lattice-name').textContent = shown(state.lattice);
    document.title = `Trellis · ${shown(state.lattice)}`;
    renderBanner(); renderHosts(); renderLinks(); renderApps(); renderEvents(); renderCounts();
  }
  function route() {
    const hash = location.hash.replace(/^#/, '') || 'hosts';
    const [view, arg] = [hash.split('/')[0], decodeURIComponent(hash.split('/').slice(1).join('/'))];
    const known = ['hosts', 'links', 'apps', 'events', 'calls'];
    const v = known.includes(view) ? view : 'hosts';
    for (const k of known) $(`#view-${k}`).hidden = k !== v;
    for (const a of document.querySelectorAll('.tabs a')) {
      if (a.getAttribute('data-view') === v) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    if (v === 'calls' && arg) watchCalls(arg);
    if (v !== 'calls') stopCalls();
    if (v === 'events') renderEvents();
  }

  function init() {
    window.addEventListener('hashchange', route);
    $('#validate').addEventListener('click', validateManifest);
    $('#deploy').addEventListener('click', deployManifest);
    $('#deploy-form').addEventListener('submit', (e) => e.preventDefault());
    $('#event-filters').addEventListener('submit', (e) => e.preventDefault());
    for (const id of ['#filter-type', '#filter-text', '#filter-heartbeats']) $(id).addEventListener('input', renderEvents);
    $('#events-clear').addEventListener('click', () => { state.events = []; renderEvents(); });
    $('#calls-stop').addEventListener('click', () => { stopCalls(); $('#calls-hint').textContent = 'Stopped.'; });
    $('#manifest-file').addEventListener('change', async (e) => {
      const f = e.target.files && e.target.files[0];
      if (!f) return;
      if (f.size > state.caps.max_manifest_bytes) { toast(`${f.name} is ${f.size} bytes; the dashboard takes manifests of at most ${state.caps.max_manifest_bytes}`, true); return; }
      $('#manifest').value = await f.text();
      validateManifest();
    });
    setInterval(tickUptimes, 1000);
    route();
    renderAll();
    connectEvents();
  }
  init();
})();
