// Federation: upstreams (every parameter), upstream sets and the live links.
import { get, put, del, seg } from '../api.js';
import { h, fill, panel, table, num, action, form, invalid, vhostOptions, badge } from '../dom.js';
import { knownVhosts, currentVhost } from '../app.js';

const uriList = (u) => (Array.isArray(u) ? u : u ? [u] : []);

/** Builds an upstream value from the form, checking what can be checked here. */
function upstreamValue(v) {
  const uris = v.uri.split('\n').map((s) => s.trim()).filter(Boolean);
  if (uris.length === 0) invalid('At least one URI is required, like amqp://user:password@old-host:5672/%2F');
  for (const u of uris) if (!/^amqps?:\/\//.test(u)) invalid(`"${u}" is not an AMQP URI: it must start with amqp:// or amqps://`);
  const value = { uri: uris.length === 1 ? uris[0] : uris };
  const int = (key, label) => {
    if (v[key] === '') return;
    const n = Number(v[key]);
    if (!Number.isInteger(n) || n < 0) invalid(`${label} must be a whole number ≥ 0.`);
    value[key] = n;
  };
  int('prefetch-count', 'Prefetch count');
  if (v['reconnect-delay'] !== '') {
    const d = Number(v['reconnect-delay']);
    if (!(d >= 0)) invalid('Reconnect delay must be a number of seconds ≥ 0.');
    value['reconnect-delay'] = d;
  }
  value['ack-mode'] = v['ack-mode'];
  if (v['trust-user-id']) value['trust-user-id'] = true;
  for (const k of ['queue', 'consumer-tag', 'exchange', 'queue-type']) if (v[k].trim()) value[k] = v[k].trim();
  int('max-hops', 'Max hops');
  int('expires', 'Expires');
  int('message-ttl', 'Message TTL');
  return value;
}

export default {
  title: 'Federation',
  async render(ctx) {
    const count = h('span', { class: 'badge count', id: 'link-count' }, 'Links: –');
    const ups = h('div');
    const sets = h('div');
    const links = h('div');
    const upstreamForm = form([
      { name: 'vhost', label: 'Virtual host', type: 'select', options: vhostOptions(knownVhosts()), value: currentVhost() || '/' },
      { name: 'name', label: 'Name', required: true, placeholder: 'old-cluster' },
      { name: 'uri', label: 'URIs', type: 'textarea', rows: 3, placeholder: 'amqp://user:password@old-host:5672/%2F', help: 'One per line, tried in turn. amqps:// verifies the server certificate; add ?cacertfile=/path/ca.pem, &server_name_indication=host or &verify=verify_none as needed. Passwords are never shown again.' },
      { name: 'prefetch-count', label: 'Prefetch count', type: 'number', value: 1000, min: 0, help: 'Messages in flight per link (default 1000).' },
      { name: 'reconnect-delay', label: 'Reconnect delay (s)', type: 'number', value: 1, min: 0, step: 'any', help: 'Wait before reconnecting; doubles while the upstream stays down, up to 60 s.' },
      { name: 'ack-mode', label: 'Ack mode', type: 'select', options: [['on-confirm', 'on-confirm — ack after it is safely stored here (no loss)'], ['on-publish', 'on-publish — ack once enqueued here'], ['no-ack', 'no-ack — fastest, a cut link loses in-flight messages']] },
      { name: 'queue', label: 'Upstream queue', placeholder: 'same name as the local queue', help: 'Only when the upstream queue has another name.' },
      { name: 'consumer-tag', label: 'Consumer tag', placeholder: 'federation-link-<upstream>' },
      { name: 'trust-user-id', label: 'Trust user-id', type: 'checkbox' },
      { more: true, name: 'max-hops', label: 'Max hops', type: 'number', placeholder: '1', help: 'Kept so definitions round-trip; queue links use the loop rule instead.' },
      { more: true, name: 'exchange', label: 'Upstream exchange' },
      { more: true, name: 'expires', label: 'Expires (ms)', type: 'number' },
      { more: true, name: 'message-ttl', label: 'Message TTL (ms)', type: 'number' },
      { more: true, name: 'queue-type', label: 'Queue type' },
    ], async (v) => {
      const name = v.name.trim();
      if (!name) invalid('Name is required.');
      await put(`/api/parameters/federation-upstream/${seg(v.vhost)}/${seg(name)}`, { value: upstreamValue(v) });
      refresh();
      return `Upstream ${name} saved.`;
    }, { id: 'upstream-form', submitLabel: 'Save upstream', moreLabel: 'Exchange-federation settings (kept in definitions, not used by queue links)' });
    const setForm = form([
      { name: 'vhost', label: 'Virtual host', type: 'select', options: vhostOptions(knownVhosts()), value: currentVhost() || '/' },
      { name: 'name', label: 'Name', required: true },
      { name: 'upstreams', label: 'Upstreams', placeholder: 'old-a, old-b', help: 'Comma-separated upstream names. The set "all" always exists and holds every upstream.' },
    ], async (v) => {
      const name = v.name.trim();
      if (!name) invalid('Name is required.');
      if (name === 'all') invalid('"all" is built in: it always holds every upstream.');
      const members = v.upstreams.split(',').map((s) => s.trim()).filter(Boolean);
      if (members.length === 0) invalid('Name at least one upstream.');
      await put(`/api/parameters/federation-upstream-set/${seg(v.vhost)}/${seg(name)}`, { value: members.map((upstream) => ({ upstream })) });
      refresh();
      return `Upstream set ${name} saved.`;
    }, { id: 'upstream-set-form', submitLabel: 'Save upstream set' });
    fill(ctx.main, h('h1', {}, 'Federation ', count),
      panel('Links', h('p', { class: 'help' }, 'A link appears when a local queue matches a policy with federation-upstream or federation-upstream-set. It pulls only while the queue is empty and a local consumer has room.'), links),
      panel('Upstreams', ups), panel('Add or update an upstream', upstreamForm),
      panel('Upstream sets', sets), panel('Add or update an upstream set', setForm));
    const refresh = async () => {
      const scope = ctx.vhost ? `/${seg(ctx.vhost)}` : '';
      const [upList, setList, linkList] = await Promise.all([
        get(`/api/parameters/federation-upstream${scope}`), get(`/api/parameters/federation-upstream-set${scope}`), get(`/api/federation-links${scope}`)]);
      fill(count, `Links: ${linkList.length}`);
      fill(links, table([
        { label: 'Virtual host', value: (l) => l.vhost },
        { label: 'Queue', value: (l) => h('a', { href: `#/queues/${seg(l.vhost)}/${seg(l.queue)}` }, l.queue) },
        { label: 'Upstream', value: (l) => [l.upstream, l.upstream_queue !== l.queue ? h('div', { class: 'help' }, `queue ${l.upstream_queue}`) : null] },
        { label: 'URI', value: (l) => h('code', {}, l.uri) },
        { label: 'State', value: (l) => [badge(l.status), l.error ? h('div', { class: 'err-text link-error' }, l.error) : null] },
        { label: 'Since', value: (l) => l.timestamp, cls: 'nowrap' },
        { label: 'Established', value: (l) => l.established_at || '–', cls: 'nowrap' },
        { label: 'Transferred', value: (l) => num(l.messages_transferred), num: true },
        { label: 'Duplicates dropped', value: (l) => num(l.duplicates_dropped), num: true },
        { label: 'Reconnects', value: (l) => num(l.reconnects), num: true },
        { label: 'Left upstream', value: (l) => num(l.upstream_messages), num: true },
        { label: '', value: (l) => action('Restart', async () => {
          await del(`/api/federation-links/vhost/${seg(l.vhost)}/${seg(l.id)}/restart`);
          refresh();
          return `Link for ${l.queue} restarted.`;
        }) },
      ], linkList, { id: 'links-table', key: (l) => `${l.vhost}/${l.queue}/${l.upstream}`, empty: 'No links. They appear once a local queue matches a federation policy.' }));
      fill(ups, table([
        { label: 'Virtual host', value: (u) => u.vhost },
        { label: 'Name', value: (u) => h('strong', {}, u.name) },
        { label: 'URIs', value: (u) => uriList(u.value.uri).map((x) => h('div', {}, h('code', {}, x))) },
        { label: 'Prefetch', value: (u) => String(u.value['prefetch-count'] ?? 1000), num: true },
        { label: 'Reconnect delay', value: (u) => `${u.value['reconnect-delay'] ?? 1} s`, num: true },
        { label: 'Ack mode', value: (u) => u.value['ack-mode'] || 'on-confirm' },
        { label: 'Upstream queue', value: (u) => u.value.queue || '(same name)' },
        { label: '', value: (u) => h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'small secondary', onclick: () => {
            const x = u.value;
            upstreamForm.setValues({ vhost: u.vhost, name: u.name, uri: uriList(x.uri).join('\n'), 'prefetch-count': x['prefetch-count'] ?? 1000,
              'reconnect-delay': x['reconnect-delay'] ?? 1, 'ack-mode': x['ack-mode'] || 'on-confirm', queue: x.queue || '', 'consumer-tag': x['consumer-tag'] || '',
              'trust-user-id': !!x['trust-user-id'], 'max-hops': x['max-hops'] ?? '', exchange: x.exchange || '', expires: x.expires ?? '', 'message-ttl': x['message-ttl'] ?? '', 'queue-type': x['queue-type'] || '' });
            upstreamForm.scrollIntoView({ behavior: 'smooth' });
          } }, 'Edit'),
          action('Delete', async () => {
            await del(`/api/parameters/federation-upstream/${seg(u.vhost)}/${seg(u.name)}`);
            refresh();
            return `Upstream ${u.name} deleted; its links stop.`;
          }, { danger: true, confirm: `Delete upstream ${u.name}? Its links stop; nothing is deleted upstream.` })) },
      ], upList, { id: 'upstreams-table', key: (u) => `${u.vhost}/${u.name}`, empty: 'No upstreams. Add the old cluster below.' }));
      fill(sets, table([
        { label: 'Virtual host', value: (s) => s.vhost },
        { label: 'Name', value: (s) => h('strong', {}, s.name) },
        { label: 'Upstreams', value: (s) => (Array.isArray(s.value) ? s.value : []).map((m) => h('span', { class: 'chip' }, m.upstream)) },
        { label: '', value: (s) => action('Delete', async () => {
          await del(`/api/parameters/federation-upstream-set/${seg(s.vhost)}/${seg(s.name)}`);
          refresh();
          return `Upstream set ${s.name} deleted.`;
        }, { danger: true, confirm: `Delete upstream set ${s.name}?` }) },
      ], setList, { id: 'upstream-sets-table', empty: 'No upstream sets besides the built-in "all".' }));
    };
    ctx.every(refresh);
  },
};
