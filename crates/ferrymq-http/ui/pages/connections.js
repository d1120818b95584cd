// Connections and channels, with closing a connection.
import { get, del, seg } from '../api.js';
import { h, fill, panel, table, num, rate, bytes, detailRate, action, badge } from '../dom.js';

const scoped = (ctx, what) => (ctx.vhost ? `/api/vhosts/${seg(ctx.vhost)}/${what}` : `/api/${what}`);

export const connections = {
  title: 'Connections',
  async render(ctx) {
    const body = h('div');
    fill(ctx.main, h('h1', {}, 'Connections'), panel(null, body));
    ctx.every(async () => {
      const list = await get(scoped(ctx, 'connections'));
      fill(body, table([
        { label: 'Name', value: (c) => c.name },
        { label: 'User', value: (c) => c.user },
        { label: 'Virtual host', value: (c) => c.vhost },
        { label: 'Client', value: (c) => clientName(c) },
        { label: 'Protocol', value: (c) => [c.protocol, c.ssl ? ' TLS' : ''] },
        { label: 'Channels', value: (c) => num(c.channels), num: true },
        { label: 'State', value: (c) => badge(c.state || 'running', c.state === 'blocked' ? 'bad' : 'ok') },
        { label: 'From client', value: (c) => `${bytes(Math.round(detailRate(c, 'recv_oct')))}/s`, num: true },
        { label: 'To client', value: (c) => `${bytes(Math.round(detailRate(c, 'send_oct')))}/s`, num: true },
        { label: '', value: (c) => action('Close', async () => {
          await del(`/api/connections/${seg(c.name)}`);
          return `Connection ${c.name} closed.`;
        }, { danger: true, confirm: `Close connection ${c.name}? The client will see connection.close.` }) },
      ], list, { empty: 'No client is connected.', id: 'connections-table' }));
    });
  },
};

function clientName(c) {
  const p = c.client_properties || {};
  return [p.product, p.version].filter(Boolean).join(' ') || p.connection_name || '–';
}

export const channels = {
  title: 'Channels',
  async render(ctx) {
    const body = h('div');
    fill(ctx.main, h('h1', {}, 'Channels'), panel(null, body));
    ctx.every(async () => {
      const list = await get(scoped(ctx, 'channels'));
      fill(body, table([
        { label: 'Channel', value: (c) => c.name },
        { label: 'User', value: (c) => c.user },
        { label: 'Virtual host', value: (c) => c.vhost },
        { label: 'Mode', value: (c) => [c.confirm ? 'confirm' : '', c.transactional ? 'transactional' : ''].filter(Boolean).join(', ') || '–' },
        { label: 'Prefetch', value: (c) => num(c.prefetch_count), num: true },
        { label: 'Unacked', value: (c) => num(c.messages_unacknowledged), num: true },
        { label: 'Consumers', value: (c) => num(c.consumer_count), num: true },
        { label: 'Publish', value: (c) => rate(detailRate(c.message_stats, 'publish')), num: true },
      ], list, { empty: 'No channel is open.' }));
    });
  },
};
