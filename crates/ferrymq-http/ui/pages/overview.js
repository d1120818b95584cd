// Overview: totals, message rates and queued messages over time, node and listeners.
import { get } from '../api.js';
import { h, fill, panel, table, num, bytes, badge } from '../dom.js';
import { history, sampleMessages, ratesChart, depthChart } from '../chart.js';

export default {
  title: 'Overview',
  async render(ctx) {
    const cards = h('div', { class: 'cards', id: 'totals' });
    const rates = h('div', { id: 'rates-chart' });
    const depth = h('div', { id: 'depth-chart' });
    const node = h('div');
    const listeners = h('div');
    const links = h('div');
    fill(ctx.main, h('h1', {}, 'Overview'), cards,
      h('div', { class: 'grid two' }, panel('Message rates', rates), panel('Queued messages', depth)),
      h('div', { class: 'grid two' }, panel('Node', node), panel('Listeners', listeners)),
      panel('Federation', links));
    const hist = history('overview');
    ctx.every(async () => {
      const [o, nodes, fed] = await Promise.all([get('/api/overview'), get('/api/nodes'), get('/api/federation-links').catch(() => [])]);
      const t = o.object_totals || {};
      const q = o.queue_totals || {};
      const card = (k, v, id) => h('div', { class: 'card', id }, h('div', { class: 'v' }, v), h('div', { class: 'k' }, k));
      fill(cards,
        card('Connections', num(t.connections), 'total-connections'), card('Channels', num(t.channels)),
        card('Exchanges', num(t.exchanges)), card('Queues', num(t.queues), 'total-queues'),
        card('Consumers', num(t.consumers)), card('Ready', num(q.messages_ready)),
        card('Unacked', num(q.messages_unacknowledged)), card('Federation links', num(fed.length), 'total-links'));
      sampleMessages(hist, o.message_stats, q.messages_ready, q.messages_unacknowledged);
      fill(rates, ratesChart(hist));
      fill(depth, depthChart(hist));
      const n = nodes[0] || {};
      fill(node, h('dl', { class: 'facts' },
        h('dt', {}, 'Node'), h('dd', {}, o.node),
        h('dt', {}, 'Cluster'), h('dd', {}, o.cluster_name),
        h('dt', {}, 'Version'), h('dd', {}, `${o.product_name || 'FerryMQ'} ${o.product_version || ''} (management API ${o.management_version})`),
        h('dt', {}, 'Uptime'), h('dd', {}, uptime(n.uptime)),
        h('dt', {}, 'Memory'), h('dd', {}, `${bytes(n.mem_used)} of ${bytes(n.mem_limit)} `, n.mem_alarm ? badge('alarm', 'bad') : null),
        h('dt', {}, 'Disk free'), h('dd', {}, `${bytes(n.disk_free)} (limit ${bytes(n.disk_free_limit)}) `, n.disk_free_alarm ? badge('alarm', 'bad') : null),
        h('dt', {}, 'File descriptors'), h('dd', {}, `${num(n.fd_used)} / ${num(n.fd_total)}`),
        h('dt', {}, 'Processors'), h('dd', {}, num(n.processors))));
      fill(listeners, table([
        { label: 'Protocol', value: (l) => l.protocol },
        { label: 'Bound to', value: (l) => l.ip_address },
        { label: 'Port', value: (l) => String(l.port), num: true },
      ], o.listeners || []));
      const by = {};
      for (const l of fed) by[l.status] = (by[l.status] || 0) + 1;
      fill(links, fed.length === 0
        ? h('p', { class: 'empty' }, 'No federation links. Add an upstream and a policy on the ', h('a', { href: '#/federation' }, 'Federation'), ' page.')
        : h('p', {}, `${fed.length} link${fed.length === 1 ? '' : 's'}: `, Object.entries(by).map(([s, c]) => [badge(`${c} ${s}`, s), ' ']), h('a', { href: '#/migration' }, 'Migration progress →')));
    });
  },
};

function uptime(ms) {
  if (ms === undefined) return '–';
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400); s %= 86400;
  const hh = Math.floor(s / 3600); s %= 3600;
  const m = Math.floor(s / 60);
  return d ? `${d}d ${hh}h` : hh ? `${hh}h ${m}m` : `${m}m ${s % 60}s`;
}
