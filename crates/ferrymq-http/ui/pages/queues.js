// Queues: a paged, sortable, searchable list and declare form; one queue with its
// charts, consumers, bindings, federation link, get, purge and delete.
import { get, put, post, del, seg } from '../api.js';
import { h, fill, panel, table, num, rate, bytes, detailRate, action, form, features, objectLink, parseObject, invalid, keyHelper, vhostOptions, chips, badge } from '../dom.js';
import { history, sampleMessages, ratesChart, depthChart } from '../chart.js';
import { knownVhosts, currentVhost } from '../app.js';

const QUEUE_ARGS = [
  ['x-message-ttl', 60000, 'milliseconds a message may wait'],
  ['x-expires', 1800000, 'milliseconds unused before the queue is deleted'],
  ['x-max-length', 10000, 'most messages kept'],
  ['x-max-length-bytes', 104857600, 'most bytes of bodies kept'],
  ['x-overflow', 'drop-head', 'drop-head, reject-publish or reject-publish-dlx'],
  ['x-dead-letter-exchange', 'dlx', 'exchange for dead letters'],
  ['x-dead-letter-routing-key', 'dead', 'routing key for dead letters'],
  ['x-max-priority', 10, 'highest message priority'],
  ['x-single-active-consumer', true, 'one consumer at a time'],
  ['x-queue-type', 'classic', 'classic (quorum and stream are accepted as classic)'],
];

// The list's state survives navigation within the session.
const view = { page: 1, page_size: 50, name: '', use_regex: false, sort: 'name', sort_reverse: false };

export const queues = {
  title: 'Queues',
  async render(ctx) {
    const body = h('div');
    const search = h('input', { type: 'search', placeholder: 'Filter by name', value: view.name, 'aria-label': 'Filter queues by name', id: 'queue-filter' });
    const regex = h('input', { type: 'checkbox', id: 'queue-regex' });
    regex.checked = view.use_regex;
    const size = h('select', { 'aria-label': 'Page size' }, [20, 50, 100, 500].map((n) => h('option', { value: n }, `${n} per page`)));
    size.value = String(view.page_size);
    let typing;
    search.addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(() => { view.name = search.value; view.page = 1; refresh(); }, 250); });
    regex.addEventListener('change', () => { view.use_regex = regex.checked; view.page = 1; refresh(); });
    size.addEventListener('change', () => { view.page_size = Number(size.value); view.page = 1; refresh(); });
    const add = form([
      { name: 'vhost', label: 'Virtual host', type: 'select', options: vhostOptions(knownVhosts()), value: currentVhost() || '/' },
      { name: 'name', label: 'Name', required: true },
      { name: 'durable', label: 'Durable', type: 'checkbox', value: true },
      { name: 'auto_delete', label: 'Auto-delete', type: 'checkbox' },
      { name: 'arguments', label: 'Arguments (JSON)', type: 'textarea', placeholder: '{}', extra: keyHelper(QUEUE_ARGS), help: 'Policies can set most of these for many queues at once.' },
    ], async (v) => {
      if (!v.name.trim()) invalid('Name is required.');
      const args = parseObject(v.arguments, 'Arguments');
      await put(`/api/queues/${seg(v.vhost)}/${seg(v.name)}`, { durable: v.durable, auto_delete: v.auto_delete, arguments: args });
      refresh();
      return `Queue ${v.name} declared.`;
    }, { id: 'add-queue', submitLabel: 'Add queue' });
    fill(ctx.main, h('h1', {}, 'Queues'),
      panel(null, h('div', { class: 'toolbar' }, search, h('label', {}, regex, ' Regex'), size), body),
      panel('Add a queue', add));
    const sortBy = (key) => {
      if (view.sort === key) view.sort_reverse = !view.sort_reverse; else { view.sort = key; view.sort_reverse = false; }
      refresh();
    };
    const refresh = async () => {
      const q = new URLSearchParams({ page: view.page, page_size: view.page_size, name: view.name, use_regex: view.use_regex, sort: view.sort, sort_reverse: view.sort_reverse, pagination: true });
      let res;
      try {
        res = await get(`${ctx.vhost ? `/api/queues/${seg(ctx.vhost)}` : '/api/queues'}?${q}`);
      } catch (e) {
        if (e.status === 400 && view.page > 1) { view.page = 1; return refresh(); }
        fill(body, h('div', { class: 'form-error', role: 'alert' }, e.message));
        return;
      }
      const pager = h('div', { class: 'pager' },
        h('button', { type: 'button', class: 'small secondary', disabled: res.page <= 1, onclick: () => { view.page--; refresh(); } }, '‹ Previous'),
        `Page ${res.page} of ${res.page_count} · ${num(res.filtered_count)} of ${num(res.total_count)} queues`,
        h('button', { type: 'button', class: 'small secondary', disabled: res.page >= res.page_count, onclick: () => { view.page++; refresh(); } }, 'Next ›'));
      fill(body, table([
        { label: 'Virtual host', value: (x) => x.vhost, sort: 'vhost' },
        { label: 'Name', value: (x) => objectLink('queues', x.vhost, x.name), sort: 'name' },
        { label: 'Type', value: (x) => x.type },
        { label: 'Features', value: (x) => features(x) },
        { label: 'State', value: (x) => badge(x.state || 'running', x.state === 'running' ? 'ok' : 'warn') },
        { label: 'Ready', value: (x) => num(x.messages_ready), num: true, sort: 'messages_ready' },
        { label: 'Unacked', value: (x) => num(x.messages_unacknowledged), num: true, sort: 'messages_unacknowledged' },
        { label: 'Total', value: (x) => num(x.messages), num: true, sort: 'messages' },
        { label: 'Consumers', value: (x) => num(x.consumers), num: true, sort: 'consumers' },
        { label: 'Incoming', value: (x) => rate(detailRate(x.message_stats, 'publish')), num: true },
        { label: 'Deliver / get', value: (x) => rate(detailRate(x.message_stats, 'deliver_get')), num: true },
      ], res.items, { id: 'queues-table', empty: view.name ? 'No queue matches the filter.' : 'No queues yet.', sort: { key: view.sort, reverse: view.sort_reverse, onSort: sortBy } }), pager);
    };
    ctx.every(refresh);
  },
};

export const queue = {
  title: 'Queue',
  async render(ctx) {
    const { vhost, name } = ctx.params;
    const path = `/api/queues/${seg(vhost)}/${seg(name)}`;
    const info = h('div');
    const charts = h('div', { class: 'grid two' });
    const consumers = h('div');
    const bindings = h('div');
    const link = h('div');
    const got = h('div', { id: 'got-messages' });
    const hist = history(`queue:${vhost}:${name}`);
    const bind = form([
      { name: 'source', label: 'From exchange', required: true },
      { name: 'routing_key', label: 'Routing key' },
      { name: 'arguments', label: 'Arguments (JSON)', type: 'textarea', rows: 2, placeholder: '{}' },
    ], async (v) => {
      if (!v.source.trim()) invalid('Say which exchange to bind from (the default exchange cannot be bound).');
      await post(`/api/bindings/${seg(vhost)}/e/${seg(v.source)}/q/${seg(name)}`, { routing_key: v.routing_key, arguments: parseObject(v.arguments, 'Arguments') });
      refresh();
      return `Bound ${name} to ${v.source}.`;
    }, { id: 'bind-queue', submitLabel: 'Bind' });
    const getForm = form([
      { name: 'count', label: 'Messages', type: 'number', value: 1, min: 1 },
      { name: 'ackmode', label: 'Ack mode', type: 'select', options: [['ack_requeue_true', 'Nack, requeue (look only)'], ['ack_requeue_false', 'Ack (remove from the queue)'], ['reject_requeue_true', 'Reject, requeue'], ['reject_requeue_false', 'Reject, do not requeue']] },
      { name: 'encoding', label: 'Encoding', type: 'select', options: [['auto', 'Auto: string if UTF-8, else base64'], ['base64', 'Base64']] },
      { name: 'truncate', label: 'Truncate bodies at', type: 'number', value: 50000, help: 'bytes' },
    ], async (v) => {
      const count = Number(v.count);
      if (!Number.isInteger(count) || count < 1) invalid('Messages must be a whole number of at least 1.');
      const list = await post(`${path}/get`, { count, ackmode: v.ackmode, encoding: v.encoding, truncate: Number(v.truncate) || undefined });
      fill(got, list.length === 0 ? h('p', { class: 'empty' }, 'The queue is empty.') : list.map((m, i) => h('div', { class: 'panel message' },
        h('h2', {}, `Message ${i + 1}`, m.redelivered ? badge('redelivered', 'warn') : null),
        h('dl', { class: 'facts' },
          h('dt', {}, 'Exchange'), h('dd', {}, m.exchange || '(AMQP default)'),
          h('dt', {}, 'Routing key'), h('dd', {}, m.routing_key),
          h('dt', {}, 'Left in queue'), h('dd', {}, num(m.message_count)),
          h('dt', {}, 'Properties'), h('dd', {}, chips(m.properties)),
          h('dt', {}, `Payload (${num(m.payload_bytes)} bytes, ${m.payload_encoding})`), h('dd', {}, h('pre', { class: 'payload' }, m.payload))))));
      refresh();
      return list.length ? `Got ${list.length} message${list.length === 1 ? '' : 's'}.` : 'The queue is empty.';
    }, { id: 'get-messages', submitLabel: 'Get messages' });
    fill(ctx.main, h('div', { class: 'crumbs' }, h('a', { href: '#/queues' }, 'Queues'), ` / ${vhost}`),
      h('h1', {}, 'Queue ', h('code', {}, name)), info, charts, link,
      panel('Consumers', consumers), panel('Bindings', bindings),
      h('div', { class: 'grid two' }, panel('Get messages', getForm, got), panel('Add a binding', bind)),
      panel('Purge and delete', h('div', { class: 'actions' },
        action('Purge messages', async () => {
          await del(`${path}/contents`);
          refresh();
          return `Queue ${name} purged.`;
        }, { danger: true, confirm: `Remove every ready message from ${name}?`, name: 'purge' }),
        action('Delete queue', async () => {
          await del(path);
          location.hash = '#/queues';
          return `Queue ${name} deleted.`;
        }, { danger: true, confirm: `Delete queue ${name} and its messages?`, name: 'delete-queue' }))));
    const refresh = async () => {
      const [q, allConsumers, src, links] = await Promise.all([
        get(path), get(`/api/consumers/${seg(vhost)}`), get(`${path}/bindings`),
        get(`/api/federation-links/${seg(vhost)}`).catch(() => []),
      ]);
      sampleMessages(hist, q.message_stats, q.messages_ready, q.messages_unacknowledged);
      fill(info, h('div', { class: 'cards' },
        [['Ready', num(q.messages_ready)], ['Unacked', num(q.messages_unacknowledged)], ['Total', num(q.messages)],
          ['Consumers', num(q.consumers)], ['Bytes', bytes(q.message_bytes)], ['Memory', bytes(q.memory)]]
          .map(([k, v]) => h('div', { class: 'card' }, h('div', { class: 'v' }, v), h('div', { class: 'k' }, k)))),
        h('div', { class: 'panel' }, h('dl', { class: 'facts' },
          h('dt', {}, 'Features'), h('dd', {}, features(q).length ? features(q) : '–'),
          h('dt', {}, 'State'), h('dd', {}, q.state),
          h('dt', {}, 'Policy'), h('dd', {}, q.policy || '–', q.operator_policy ? ` (operator: ${q.operator_policy})` : ''),
          h('dt', {}, 'Effective policy'), h('dd', {}, chips(q.effective_policy_definition)))));
      fill(charts, panel('Message rates', ratesChart(hist)), panel('Queued messages', depthChart(hist)));
      const own = links.filter((l) => l.queue === name);
      fill(link, own.length ? panel('Federation', own.map((l) => h('p', {}, 'Pulls from upstream ', h('strong', {}, l.upstream), ` (queue ${l.upstream_queue}): `,
        badge(l.status), ` ${num(l.messages_transferred)} transferred`, l.upstream_messages !== undefined ? `, ${num(l.upstream_messages)} still upstream` : '',
        l.error ? h('div', { class: 'err-text' }, l.error) : null))) : null);
      const mine = allConsumers.filter((c) => c.queue && c.queue.name === name);
      fill(consumers, table([
        { label: 'Consumer tag', value: (c) => h('code', {}, c.consumer_tag) },
        { label: 'Channel', value: (c) => (c.channel_details ? c.channel_details.name : '–') },
        { label: 'Ack required', value: (c) => (c.ack_required ? 'yes' : 'no') },
        { label: 'Prefetch', value: (c) => num(c.prefetch_count), num: true },
        { label: 'Exclusive', value: (c) => (c.exclusive ? 'yes' : 'no') },
        { label: 'Arguments', value: (c) => chips(c.arguments) },
      ], mine, { empty: 'No consumers.' }));
      fill(bindings, table([
        { label: 'From', value: (b) => (b.source === '' ? '(AMQP default)' : objectLink('exchanges', vhost, b.source)) },
        { label: 'Routing key', value: (b) => h('code', {}, b.routing_key) },
        { label: 'Arguments', value: (b) => chips(b.arguments) },
        { label: '', value: (b) => (b.source === '' ? '' : action('Unbind', async () => {
          await del(`/api/bindings/${seg(vhost)}/e/${seg(b.source)}/q/${seg(name)}/${seg(b.properties_key)}`);
          refresh();
          return 'Binding removed.';
        }, { danger: true })) },
      ], src));
    };
    ctx.every(refresh);
  },
};
