// Exchanges: list and declare; one exchange with its bindings and a publish form.
import { get, put, post, del, seg } from '../api.js';
import { h, fill, panel, table, rate, detailRate, action, form, features, objectLink, parseObject, invalid, keyHelper, vhostOptions, chips } from '../dom.js';
import { knownVhosts, currentVhost } from '../app.js';

const EXCHANGE_ARGS = [['alternate-exchange', 'my-ae', 'where unroutable messages go']];

export const exchanges = {
  title: 'Exchanges',
  async render(ctx) {
    const body = h('div');
    const add = form([
      { name: 'vhost', label: 'Virtual host', type: 'select', options: vhostOptions(knownVhosts()), value: currentVhost() || '/' },
      { name: 'name', label: 'Name', required: true },
      { name: 'type', label: 'Type', type: 'select', options: [['direct'], ['fanout'], ['topic'], ['headers']] },
      { name: 'durable', label: 'Durable', type: 'checkbox', value: true },
      { name: 'auto_delete', label: 'Auto-delete', type: 'checkbox' },
      { name: 'internal', label: 'Internal', type: 'checkbox' },
      { name: 'arguments', label: 'Arguments (JSON)', type: 'textarea', placeholder: '{}', extra: keyHelper(EXCHANGE_ARGS) },
    ], async (v) => {
      if (!v.name.trim()) invalid('Name is required.');
      const args = parseObject(v.arguments, 'Arguments');
      await put(`/api/exchanges/${seg(v.vhost)}/${seg(v.name)}`, { type: v.type, durable: v.durable, auto_delete: v.auto_delete, internal: v.internal, arguments: args });
      refresh();
      return `Exchange ${v.name} declared.`;
    }, { id: 'add-exchange', submitLabel: 'Add exchange' });
    fill(ctx.main, h('h1', {}, 'Exchanges'), panel(null, body), panel('Add an exchange', add));
    const refresh = async () => {
      const list = await get(ctx.vhost ? `/api/exchanges/${seg(ctx.vhost)}` : '/api/exchanges');
      fill(body, table([
        { label: 'Virtual host', value: (e) => e.vhost },
        { label: 'Name', value: (e) => objectLink('exchanges', e.vhost, e.name) },
        { label: 'Type', value: (e) => e.type },
        { label: 'Features', value: (e) => features(e) },
        { label: 'Rate in', value: (e) => rate(detailRate(e.message_stats, 'publish_in')), num: true },
        { label: 'Rate out', value: (e) => rate(detailRate(e.message_stats, 'publish_out')), num: true },
      ], list, { id: 'exchanges-table' }));
    };
    ctx.every(refresh);
  },
};

export const exchange = {
  title: 'Exchange',
  async render(ctx) {
    const { vhost, name } = ctx.params;
    const path = `/api/exchanges/${seg(vhost)}/${seg(name)}`;
    const info = h('div');
    const bindings = h('div');
    const bind = form([
      { name: 'dest_type', label: 'To', type: 'select', options: [['q', 'Queue'], ['e', 'Exchange']] },
      { name: 'destination', label: 'Name', required: true },
      { name: 'routing_key', label: 'Routing key' },
      { name: 'arguments', label: 'Arguments (JSON)', type: 'textarea', rows: 2, placeholder: '{}' },
    ], async (v) => {
      if (!v.destination.trim()) invalid('Say which queue or exchange to bind to.');
      await post(`/api/bindings/${seg(vhost)}/e/${seg(name)}/${v.dest_type}/${seg(v.destination)}`, { routing_key: v.routing_key, arguments: parseObject(v.arguments, 'Arguments') });
      refresh();
      return `Bound ${v.destination} to ${name}.`;
    }, { id: 'bind-exchange', submitLabel: 'Bind' });
    const publish = form([
      { name: 'routing_key', label: 'Routing key' },
      { name: 'delivery_mode', label: 'Delivery mode', type: 'select', options: [['1', '1 – transient'], ['2', '2 – persistent']] },
      { name: 'headers', label: 'Headers (JSON)', type: 'textarea', rows: 2, placeholder: '{"x-trace": "abc"}' },
      { name: 'properties', label: 'Properties (JSON)', type: 'textarea', rows: 2, placeholder: '{"content_type": "text/plain", "message_id": "m-1"}' },
      { name: 'payload', label: 'Payload', type: 'textarea' },
      { name: 'encoding', label: 'Payload encoding', type: 'select', options: [['string', 'String'], ['base64', 'Base64']] },
    ], async (v) => {
      const properties = parseObject(v.properties, 'Properties');
      const headers = parseObject(v.headers, 'Headers');
      if (Object.keys(headers).length) properties.headers = headers;
      properties.delivery_mode = Number(v.delivery_mode);
      const r = await post(`${path}/publish`, { routing_key: v.routing_key, payload: v.payload, payload_encoding: v.encoding, properties });
      return r && r.routed ? 'Message published and routed.' : 'Message published, but no queue was bound to take it (not routed).';
    }, { id: 'publish', submitLabel: 'Publish message' });
    fill(ctx.main, h('div', { class: 'crumbs' }, h('a', { href: '#/exchanges' }, 'Exchanges'), ` / ${vhost}`),
      h('h1', {}, 'Exchange ', h('code', {}, name || '(AMQP default)')), info,
      panel('Bindings from this exchange', bindings), h('div', { class: 'grid two' }, panel('Add a binding', bind), panel('Publish a message', publish)),
      panel('Delete', action('Delete this exchange', async () => {
        await del(path);
        location.hash = '#/exchanges';
        return `Exchange ${name} deleted.`;
      }, { danger: true, confirm: `Delete exchange ${name}?`, name: 'delete-exchange' })));
    const refresh = async () => {
      const [e, src] = await Promise.all([get(path), get(`${path}/bindings/source`)]);
      fill(info, h('div', { class: 'panel' }, h('dl', { class: 'facts' },
        h('dt', {}, 'Type'), h('dd', {}, e.type),
        h('dt', {}, 'Features'), h('dd', {}, features(e).length ? features(e) : '–'),
        h('dt', {}, 'Policy'), h('dd', {}, e.policy || '–'),
        h('dt', {}, 'Effective policy'), h('dd', {}, chips(e.effective_policy_definition)),
        h('dt', {}, 'Rate in / out'), h('dd', {}, `${rate(detailRate(e.message_stats, 'publish_in'))} / ${rate(detailRate(e.message_stats, 'publish_out'))}`))));
      fill(bindings, table([
        { label: 'To', value: (b) => (b.destination_type === 'queue' ? objectLink('queues', vhost, b.destination) : objectLink('exchanges', vhost, b.destination)) },
        { label: 'Kind', value: (b) => b.destination_type },
        { label: 'Routing key', value: (b) => h('code', {}, b.routing_key) },
        { label: 'Arguments', value: (b) => chips(b.arguments) },
        { label: '', value: (b) => action('Unbind', async () => {
          await del(`/api/bindings/${seg(vhost)}/e/${seg(name)}/${b.destination_type === 'queue' ? 'q' : 'e'}/${seg(b.destination)}/${seg(b.properties_key)}`);
          refresh();
          return 'Binding removed.';
        }, { danger: true }) },
      ], src, { empty: 'No bindings.' }));
    };
    ctx.every(refresh);
  },
};
