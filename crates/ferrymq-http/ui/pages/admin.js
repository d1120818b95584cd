// Administration: virtual hosts, users and their permissions.
import { get, put, del, seg } from '../api.js';
import { h, fill, panel, table, num, action, form, invalid, vhostOptions } from '../dom.js';
import { knownVhosts, reloadVhosts, me } from '../app.js';

export const vhosts = {
  title: 'Virtual hosts',
  async render(ctx) {
    const body = h('div');
    const add = form([
      { name: 'name', label: 'Name', required: true },
      { name: 'description', label: 'Description' },
      { name: 'tags', label: 'Tags', placeholder: 'production, team-a', help: 'Comma-separated.' },
    ], async (v) => {
      const name = v.name.trim();
      if (!name) invalid('Name is required.');
      await put(`/api/vhosts/${seg(name)}`, { description: v.description, tags: v.tags });
      await reloadVhosts();
      refresh();
      return `Virtual host ${name} created.`;
    }, { id: 'add-vhost', submitLabel: 'Add virtual host' });
    fill(ctx.main, h('h1', {}, 'Virtual hosts'), panel(null, body), panel('Add a virtual host', add));
    const refresh = async () => {
      const list = await get('/api/vhosts');
      fill(body, table([
        { label: 'Name', value: (v) => h('strong', {}, v.name) },
        { label: 'Description', value: (v) => v.description || '' },
        { label: 'Tags', value: (v) => (v.tags || []).map((t) => h('span', { class: 'chip' }, t)) },
        { label: 'Ready', value: (v) => num(v.messages_ready), num: true },
        { label: 'Unacked', value: (v) => num(v.messages_unacknowledged), num: true },
        { label: '', value: (v) => action('Delete', async () => {
          await del(`/api/vhosts/${seg(v.name)}`);
          await reloadVhosts();
          refresh();
          return `Virtual host ${v.name} deleted.`;
        }, { danger: true, confirm: `Delete virtual host ${v.name} with all its queues, exchanges and messages?` }) },
      ], list, { id: 'vhosts-table', key: (v) => v.name }));
    };
    ctx.every(refresh);
  },
};

const TAGS = ['administrator', 'monitoring', 'policymaker', 'management', 'impersonator'];

export const users = {
  title: 'Users',
  async render(ctx) {
    const body = h('div');
    const perms = h('div');
    const add = form([
      { name: 'name', label: 'Username', required: true },
      { name: 'password', label: 'Password', type: 'password', autocomplete: 'new-password', help: 'Leave empty when updating tags only, to keep the current password.' },
      { name: 'tags', label: 'Tags', placeholder: 'administrator', help: `Comma-separated: ${TAGS.join(', ')}.` },
    ], async (v, f) => {
      const name = v.name.trim();
      if (!name) invalid('Username is required.');
      const tags = v.tags.split(',').map((t) => t.trim()).filter(Boolean);
      const unknown = tags.filter((t) => !TAGS.includes(t));
      if (unknown.length) invalid(`Unknown tag ${unknown.join(', ')}: use ${TAGS.join(', ')}.`);
      let exists = true;
      try { await get(`/api/users/${seg(name)}`); } catch (e) { if (e.status === 404) exists = false; else throw e; }
      if (!exists && !v.password) invalid('A new user needs a password.');
      const body = { tags: tags.join(',') };
      if (v.password) body.password = v.password;
      await put(`/api/users/${seg(name)}`, body);
      f.inputs.password.value = '';
      refresh();
      return exists ? `User ${name} updated.` : `User ${name} created.`;
    }, { id: 'add-user', submitLabel: 'Add or update user' });
    const setPerm = form([
      { name: 'user', label: 'User', required: true },
      { name: 'vhost', label: 'Virtual host', type: 'select', options: vhostOptions(knownVhosts()) },
      { name: 'configure', label: 'Configure regexp', value: '.*' },
      { name: 'write', label: 'Write regexp', value: '.*' },
      { name: 'read', label: 'Read regexp', value: '.*' },
    ], async (v) => {
      if (!v.user.trim()) invalid('Say which user.');
      for (const k of ['configure', 'write', 'read']) {
        try { new RegExp(v[k]); } catch (e) { invalid(`The ${k} pattern is not a valid regular expression: ${e.message}`); }
      }
      await put(`/api/permissions/${seg(v.vhost)}/${seg(v.user.trim())}`, { configure: v.configure, write: v.write, read: v.read });
      refresh();
      return `Permissions of ${v.user} on ${v.vhost} set.`;
    }, { id: 'set-permission', submitLabel: 'Set permission' });
    fill(ctx.main, h('h1', {}, 'Users'), panel(null, body), panel('Permissions', perms),
      h('div', { class: 'grid two' }, panel('Add or update a user', add), panel('Set a permission', setPerm)));
    const refresh = async () => {
      const [list, permissions] = await Promise.all([get('/api/users'), get('/api/permissions')]);
      fill(body, table([
        { label: 'Name', value: (u) => h('strong', {}, u.name) },
        { label: 'Tags', value: (u) => (Array.isArray(u.tags) ? u.tags : String(u.tags || '').split(',')).filter(Boolean).map((t) => h('span', { class: 'chip' }, t)) },
        { label: 'Password', value: (u) => (u.password_hash ? 'set' : 'none') },
        { label: 'Can access', value: (u) => permissions.filter((p) => p.user === u.name).map((p) => h('span', { class: 'chip' }, p.vhost)) },
        { label: '', value: (u) => (me() && me().name === u.name ? h('span', { class: 'help' }, 'you') : action('Delete', async () => {
          await del(`/api/users/${seg(u.name)}`);
          refresh();
          return `User ${u.name} deleted.`;
        }, { danger: true, confirm: `Delete user ${u.name}? Their connections stay open until they close.` })) },
      ], list, { id: 'users-table', key: (u) => u.name }));
      fill(perms, table([
        { label: 'User', value: (p) => p.user },
        { label: 'Virtual host', value: (p) => p.vhost },
        { label: 'Configure', value: (p) => h('code', {}, p.configure) },
        { label: 'Write', value: (p) => h('code', {}, p.write) },
        { label: 'Read', value: (p) => h('code', {}, p.read) },
        { label: '', value: (p) => action('Clear', async () => {
          await del(`/api/permissions/${seg(p.vhost)}/${seg(p.user)}`);
          refresh();
          return `Permissions of ${p.user} on ${p.vhost} cleared.`;
        }, { danger: true }) },
      ], permissions, { id: 'permissions-table', empty: 'No permissions set.' }));
    };
    ctx.every(refresh);
  },
};
