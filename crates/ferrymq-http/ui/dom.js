// Small DOM helpers: element builder, tables, forms, notices, number formats.

/** Builds an element: h('a', {href, onclick}, 'text', child…). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value' && (tag === 'textarea' || tag === 'select')) el.value = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** A titled panel. */
export function panel(title, ...children) {
  return h('section', { class: 'panel' }, title ? h('h2', {}, title) : null, ...children);
}

/** A transient message in the corner. */
export function notify(text, kind = 'ok') {
  const t = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
  const box = document.getElementById('toasts');
  box.append(t);
  while (box.children.length > 3) box.firstChild.remove();
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 3500);
}

/** Shows an API error in words. */
export function explain(e) {
  if (e && e.status === 0) return e.message;
  if (e && e.status) return `${e.message} (HTTP ${e.status}${e.error ? ', ' + e.error : ''})`;
  return String(e && e.message ? e.message : e);
}

/**
 * A table. columns: [{label, value: row => node|string, num, sort: key, title}];
 * opts.sort = {key, reverse, onSort(key)} makes headers clickable.
 */
export function table(columns, rows, opts = {}) {
  if (!rows || rows.length === 0) return h('p', { class: 'empty' }, opts.empty || 'Nothing here yet.');
  const head = h('tr', {}, columns.map((c) => {
    const cls = [c.num ? 'num' : '', c.sort && opts.sort ? 'sortable' : '',
      opts.sort && c.sort && opts.sort.key === c.sort ? 'sorted' + (opts.sort.reverse ? ' rev' : '') : ''].join(' ').trim();
    return h('th', {
      class: cls || null, title: c.title,
      onclick: c.sort && opts.sort ? () => opts.sort.onSort(c.sort) : null,
    }, c.label);
  }));
  const body = rows.map((r) => h('tr', { 'data-key': opts.key ? opts.key(r) : null },
    columns.map((c) => h('td', { class: [c.num ? 'num' : '', c.cls || ''].join(' ').trim() || null }, c.value(r)))));
  return h('div', { class: 'table-wrap' }, h('table', { id: opts.id }, h('thead', {}, head), h('tbody', {}, body)));
}

/**
 * A form from field specs: {name, label, type (text, password, number, select,
 * checkbox, textarea), options [[value, label]], value, placeholder, help, required}.
 * submit(values, form) may throw; its ApiError is shown in the form. Returns the form;
 * form.setValues(obj) refills it.
 */
export function form(fields, submit, opts = {}) {
  const status = h('div', { class: 'form-status', 'aria-live': 'polite' });
  const inputs = {};
  const rows = fields.map((f) => {
    const id = `f-${opts.id || 'form'}-${f.name}`;
    let input;
    if (f.type === 'select') {
      input = h('select', { id, name: f.name }, (f.options || []).map(([v, l]) => h('option', { value: v }, l ?? v)));
      if (f.value !== undefined) input.value = f.value;
    } else if (f.type === 'textarea') {
      input = h('textarea', { id, name: f.name, placeholder: f.placeholder, rows: f.rows || 4 });
      input.value = f.value ?? '';
    } else if (f.type === 'checkbox') {
      input = h('input', { id, name: f.name, type: 'checkbox' });
      input.checked = !!f.value;
    } else {
      input = h('input', { id, name: f.name, type: f.type || 'text', placeholder: f.placeholder, required: f.required, autocomplete: f.autocomplete || 'off', min: f.min, step: f.step });
      input.value = f.value ?? '';
    }
    inputs[f.name] = input;
    const extra = f.extra ? f.extra(input) : null;
    return h('div', { class: 'row' }, h('label', { for: id }, f.label),
      h('div', {}, input, extra, f.help ? h('div', { class: 'help' }, f.help) : null));
  });
  const button = h('button', { type: 'submit' }, opts.submitLabel || 'Save');
  const main = rows.filter((_, i) => !fields[i].more);
  const more = rows.filter((_, i) => fields[i].more);
  const el = h('form', { class: 'form', id: opts.id, novalidate: true }, main,
    more.length ? h('details', { class: 'more' }, h('summary', {}, opts.moreLabel || 'More options'), h('div', { class: 'form' }, more)) : null,
    h('div', { class: 'actions' }, button, opts.extraButtons || null), status);
  el.inputs = inputs;
  el.values = () => {
    const out = {};
    for (const [k, i] of Object.entries(inputs)) out[k] = i.type === 'checkbox' ? i.checked : i.value;
    return out;
  };
  el.setValues = (obj) => {
    for (const [k, v] of Object.entries(obj)) {
      const i = inputs[k];
      if (!i) continue;
      if (i.type === 'checkbox') i.checked = !!v; else i.value = v ?? '';
    }
  };
  el.showError = (text) => fill(status, h('div', { class: 'form-error', role: 'alert' }, text));
  el.showOk = (text) => fill(status, h('div', { class: 'form-ok', role: 'status' }, text));
  el.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    fill(status);
    button.disabled = true;
    try {
      const msg = await submit(el.values(), el);
      if (msg) el.showOk(msg);
    } catch (e) {
      el.showError(explain(e));
    } finally {
      button.disabled = false;
    }
  });
  return el;
}

/** A button that runs an action after an optional confirmation and reports the result. */
export function action(label, run, opts = {}) {
  return h('button', {
    type: 'button', class: `small ${opts.danger ? 'danger' : 'secondary'}`, title: opts.title,
    'data-action': opts.name || label.toLowerCase(),
    onclick: async (ev) => {
      if (opts.confirm && !window.confirm(opts.confirm)) return;
      ev.target.disabled = true;
      try {
        const msg = await run();
        if (msg) notify(msg);
      } catch (e) {
        notify(explain(e), 'error');
      } finally {
        ev.target.disabled = false;
      }
    },
  }, label);
}

/** Throws a plain error shown in a form (client-side validation). */
export function invalid(text) { throw new Error(text); }

/** Parses optional JSON object text from a form field, naming the field on failure. */
export function parseObject(text, what) {
  if (!text || !text.trim()) return {};
  let v;
  try { v = JSON.parse(text); } catch (e) { invalid(`${what} is not valid JSON: ${e.message}`); }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) invalid(`${what} must be a JSON object, like {"key": "value"}`);
  return v;
}

const nf = new Intl.NumberFormat('en');
/** 12,345 */
export const num = (n) => (n === undefined || n === null ? '–' : nf.format(n));
/** 12.3/s */
export const rate = (r) => (r === undefined || r === null ? '–' : `${nf.format(Math.round(r * 10) / 10)}/s`);
/** 1.2 MiB */
export function bytes(n) {
  if (n === undefined || n === null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}
/** The rate in a RabbitMQ `*_details` object. */
export const detailRate = (stats, key) => stats && stats[key + '_details'] ? stats[key + '_details'].rate : 0;
/** A status badge. */
export const badge = (text, kind) => h('span', { class: `badge ${kind || text}` }, text);
/** Link to a queue or exchange page. */
export const objectLink = (kind, vhost, name) =>
  h('a', { href: `#/${kind}/${encodeURIComponent(vhost)}/${encodeURIComponent(name)}` }, name === '' ? '(AMQP default)' : name);
/** Small feature chips for durable/auto-delete/arguments. */
export function features(o) {
  const out = [];
  if (o.durable) out.push(h('span', { class: 'chip', title: 'durable' }, 'D'));
  if (o.auto_delete) out.push(h('span', { class: 'chip', title: 'auto-delete' }, 'AD'));
  if (o.internal) out.push(h('span', { class: 'chip', title: 'internal' }, 'I'));
  if (o.exclusive) out.push(h('span', { class: 'chip', title: 'exclusive' }, 'Excl'));
  for (const k of Object.keys(o.arguments || {})) out.push(h('span', { class: 'chip', title: JSON.stringify(o.arguments[k]) }, k));
  if (o.policy) out.push(h('span', { class: 'chip', title: 'policy' }, 'Pol: ' + o.policy));
  return out;
}
/** key=value chips for a JSON object. */
export const chips = (obj) => Object.entries(obj || {}).map(([k, v]) => h('span', { class: 'chip' }, `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`));

/**
 * A "pick a key, add it" helper under a JSON textarea: keys are [name, template value,
 * description]; adding merges the key into the object already typed (if it parses).
 */
export function keyHelper(keys) {
  return (textarea) => {
    const pick = h('select', { 'aria-label': 'Add a key' }, h('option', { value: '' }, 'Add a key…'),
      keys.map(([k, , d]) => h('option', { value: k, title: d }, `${k} — ${d}`)));
    const add = h('button', {
      type: 'button', class: 'small secondary',
      onclick: () => {
        const entry = keys.find(([k]) => k === pick.value);
        if (!entry) return;
        let obj = {};
        try { obj = textarea.value.trim() ? JSON.parse(textarea.value) : {}; } catch { return notify('Fix the JSON first: it does not parse.', 'error'); }
        obj[entry[0]] = entry[1];
        textarea.value = JSON.stringify(obj, null, 2);
      },
    }, 'Add');
    return h('div', { class: 'helper' }, pick, add);
  };
}

/** Options for a vhost select. */
export const vhostOptions = (names) => names.map((n) => [n, n]);
