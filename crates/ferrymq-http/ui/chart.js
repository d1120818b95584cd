// Line charts drawn as SVG from samples the page collects while it is open.
import { h, detailRate, rate, num } from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';
const s = (tag, attrs, ...kids) => {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  el.append(...kids);
  return el;
};
export const COLORS = ['#0e7490', '#d97706', '#16a34a', '#7c3aed', '#dc2626'];

/** Keeps the last `max` samples of named series; survives page changes. */
export class History {
  constructor(max = 120) { this.max = max; this.series = new Map(); }
  push(name, value, at = Date.now()) {
    const list = this.series.get(name) || [];
    list.push([at, Number(value) || 0]);
    while (list.length > this.max) list.shift();
    this.series.set(name, list);
  }
  get(name) { return this.series.get(name) || []; }
}
const histories = new Map();
/** The history kept under `key` (an overview, one queue…). */
export function history(key) {
  if (!histories.has(key)) histories.set(key, new History());
  return histories.get(key);
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/** A chart of the named series of `hist`, formatted with `fmt`. */
export function lineChart(hist, names, fmt = (v) => String(v), labels = names, integer = false) {
  const W = 600, H = 190, L = 52, R = 10, T = 10, B = 22;
  const all = names.flatMap((n) => hist.get(n));
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' });
  const wrap = h('div', { class: 'chart-wrap' }, svg);
  if (all.length === 0) {
    svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'Collecting samples…'));
    return wrap;
  }
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]), t0 + 1000);
  // Whole-number series (queue depths) get at least 0..4 so every tick is distinct.
  let vmax = niceMax(Math.max(integer ? 4 : 0, ...all.map((p) => p[1])));
  if (integer) vmax = Math.ceil(vmax / 4) * 4;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / vmax) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = (vmax * i) / 4;
    svg.append(s('line', { class: 'axis', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    svg.append(s('text', { x: L - 6, y: y(v) + 3, 'text-anchor': 'end' }, fmt(v)));
  }
  const secs = Math.round((t1 - t0) / 1000);
  svg.append(s('text', { x: L, y: H - 6 }, `${secs}s ago`));
  svg.append(s('text', { x: W - R, y: H - 6, 'text-anchor': 'end' }, 'now'));
  names.forEach((n, i) => {
    const pts = hist.get(n);
    if (pts.length === 0) return;
    const d = pts.map((p, j) => `${j ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ');
    svg.append(s('path', { d, fill: 'none', stroke: COLORS[i % COLORS.length], 'stroke-width': 2, 'vector-effect': 'non-scaling-stroke' }));
    if (pts.length === 1) svg.append(s('circle', { cx: x(pts[0][0]), cy: y(pts[0][1]), r: 3, fill: COLORS[i % COLORS.length] }));
  });
  wrap.append(h('div', { class: 'legend' }, names.map((n, i) => {
    const pts = hist.get(n);
    const last = pts.length ? pts[pts.length - 1][1] : 0;
    return h('span', {}, h('i', { style: `background:${COLORS[i % COLORS.length]}` }), `${labels[i]}: ${fmt(last)}`);
  })));
  return wrap;
}

/** Records one sample of message rates and depths (an overview or a queue). */
export function sampleMessages(hist, stats, ready, unacked) {
  const ms = stats || {};
  hist.push('publish', detailRate(ms, 'publish'));
  hist.push('deliver', detailRate(ms, 'deliver_get'));
  hist.push('ack', detailRate(ms, 'ack'));
  hist.push('ready', ready || 0);
  hist.push('unacked', unacked || 0);
}

/** The message-rate chart of a history `sampleMessages` fills. */
export const ratesChart = (hist) => lineChart(hist, ['publish', 'deliver', 'ack'], (v) => rate(v), ['Publish', 'Deliver / get', 'Ack']);
/** The queued-messages chart of a history `sampleMessages` fills. */
export const depthChart = (hist) => lineChart(hist, ['ready', 'unacked'], (v) => num(Math.round(v)), ['Ready', 'Unacked'], true);
