// Migration: one row per federated queue, both sides side by side, and the phase
// the move has reached (consumers moved → producers moved → drained).
import { get, seg } from '../api.js';
import { h, fill, panel, table, num, rate, detailRate, badge } from '../dom.js';

const PHASES = ['consumers moved', 'producers moved', 'drained'];

/** How far one queue's move got: 0 none, 1 consumers, 2 producers, 3 drained. */
function phaseOf(l, q) {
  if (!q || q.consumers === 0) return 0;
  if ((l.upstream_consumers ?? 1) > 0) return 0;
  if (l.upstream_inflow_rate === undefined || l.upstream_inflow_rate === null || l.upstream_inflow_rate > 0) return 1;
  if ((l.upstream_messages ?? 1) > 0) return 2;
  return 3;
}

export default {
  title: 'Migration',
  async render(ctx) {
    const summary = h('div', { id: 'migration-phase' });
    const body = h('div');
    fill(ctx.main, h('h1', {}, 'Migration'),
      panel('Progress', h('p', { class: 'help' }, 'Move consumers to this broker first, then producers; federation pulls what is left upstream. The old queue can go once it is drained: empty, nothing arriving and no consumer but the link.'), summary),
      panel('Federated queues', body));
    ctx.every(async () => {
      const scope = ctx.vhost ? `/${seg(ctx.vhost)}` : '';
      const [links, queues] = await Promise.all([get(`/api/federation-links${scope}`), get(`/api/queues${scope}`)]);
      const byName = new Map(queues.map((q) => [`${q.vhost}\0${q.name}`, q]));
      const rows = links.map((l) => ({ l, q: byName.get(`${l.vhost}\0${l.queue}`) }));
      rows.forEach((r) => { r.phase = phaseOf(r.l, r.q); });
      const overall = rows.length ? Math.min(...rows.map((r) => r.phase)) : -1;
      const drained = rows.filter((r) => r.phase === 3).length;
      fill(summary, rows.length === 0
        ? h('p', { class: 'empty' }, 'Nothing is being federated. Add an upstream and a policy on the ', h('a', { href: '#/federation' }, 'Federation'), ' and ', h('a', { href: '#/policies' }, 'Policies'), ' pages.')
        : [h('div', { class: 'phase-steps' }, PHASES.map((p, i) => h('span', { class: overall > i ? 'done' : overall === i ? 'now' : '' }, `${i + 1}. ${p}`))),
          h('p', {}, h('strong', {}, `${drained} of ${rows.length}`), ' queues drained. ',
            overall === 3 ? badge('every upstream queue is drained: the old cluster can be decommissioned', 'drained') : null)]);
      fill(body, table([
        { label: 'Queue', value: (r) => [h('a', { href: `#/queues/${seg(r.l.vhost)}/${seg(r.l.queue)}` }, r.l.queue), h('div', { class: 'help' }, `${r.l.vhost} ← ${r.l.upstream}`)] },
        { label: 'Link', value: (r) => [badge(r.l.status), r.l.error ? h('div', { class: 'err-text' }, r.l.error) : null] },
        { label: 'Left upstream', value: (r) => num(r.l.upstream_messages), num: true, cls: 'left-upstream' },
        { label: 'Consumers upstream', value: (r) => num(r.l.upstream_consumers), num: true, title: 'Consumers on the old queue, not counting the link' },
        { label: 'Arriving upstream', value: (r) => (r.l.upstream_inflow_rate === undefined ? '–' : rate(r.l.upstream_inflow_rate)), num: true, title: 'Estimated from the change in depth and what the link moved: producers still publishing on the old side show here' },
        { label: 'Depth here', value: (r) => num(r.q && r.q.messages), num: true },
        { label: 'Consumers here', value: (r) => num(r.q && r.q.consumers), num: true },
        { label: 'Arriving here', value: (r) => rate(r.q && detailRate(r.q.message_stats, 'publish')), num: true, title: 'Publishes plus federated messages' },
        { label: 'Transferred', value: (r) => num(r.l.messages_transferred), num: true },
        { label: 'Progress', value: (r) => {
          const moved = r.l.messages_transferred || 0;
          const left = r.l.upstream_messages ?? 0;
          const pct = moved + left === 0 ? 100 : Math.round((100 * moved) / (moved + left));
          return h('div', { title: `${pct}% of the backlog seen so far moved` }, h('div', { class: 'progress' }, h('div', { style: `width:${pct}%` })), h('div', { class: 'help' }, `${pct}%`));
        } },
        { label: 'Phase', value: (r) => (r.phase === 3 ? badge('drained', 'drained') : r.phase === 0 ? badge(r.q && r.q.consumers ? 'consumers upstream' : 'waiting for consumers', 'idle') : badge(PHASES[r.phase - 1], 'warn')) },
      ], rows, { id: 'migration-table' }));
    });
  },
};
