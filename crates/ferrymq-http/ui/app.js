// The UI's shell: login, layout, navigation and a hash router. Every page is a
// module with render(ctx); ctx.every() schedules refreshes that stop when the
// user navigates away.
import { api, get, session, whoami, whenUnauthorized, seg } from './api.js';
import { h, fill, explain } from './dom.js';
import overview from './pages/overview.js';
import { connections, channels } from './pages/connections.js';
import { exchanges, exchange } from './pages/exchanges.js';
import { queues, queue } from './pages/queues.js';
import { vhosts, users } from './pages/admin.js';
import policies from './pages/policies.js';
import federation from './pages/federation.js';
import definitions from './pages/definitions.js';
import migration from './pages/migration.js';

const ROUTES = [
  ['', overview], ['connections', connections], ['channels', channels],
  ['exchanges', exchanges], ['exchanges/:vhost/:name', exchange],
  ['queues', queues], ['queues/:vhost/:name', queue],
  ['federation', federation], ['migration', migration], ['policies', policies],
  ['vhosts', vhosts], ['users', users], ['definitions', definitions],
];
const NAV = [
  [null, [['', 'Overview'], ['connections', 'Connections'], ['channels', 'Channels'], ['exchanges', 'Exchanges'], ['queues', 'Queues']]],
  ['Migration', [['federation', 'Federation'], ['migration', 'Migration']]],
  ['Administration', [['policies', 'Policies'], ['vhosts', 'Virtual hosts'], ['users', 'Users'], ['definitions', 'Definitions']]],
];

const state = { timers: [], me: null, vhosts: [], refreshMs: Number(localStorage.getItem('ferrymq.refresh') || 5000) };

function match(path) {
  const parts = path.split('/').filter(Boolean);
  for (const [pattern, page] of ROUTES) {
    const pp = pattern.split('/').filter(Boolean);
    if (pp.length !== parts.length) continue;
    const params = {};
    if (pp.every((p, i) => (p.startsWith(':') ? ((params[p.slice(1)] = decodeURIComponent(parts[i])), true) : p === parts[i]))) {
      return { page, params, key: pp[0] || '' };
    }
  }
  return null;
}

function stopTimers() { state.timers.forEach(clearInterval); state.timers = []; }

/** The vhost chosen in the header ('' = all). */
export const currentVhost = () => sessionStorage.getItem('ferrymq.vhost') || '';
/** Vhosts the user can see (for selects). */
export const knownVhosts = () => state.vhosts.map((v) => v.name);
/** The logged-in user (/api/whoami). */
export const me = () => state.me;

function loginPage(message) {
  stopTimers();
  const error = h('div', { 'aria-live': 'polite' }, message ? h('div', { class: 'form-error', role: 'alert' }, message) : null);
  const user = h('input', { name: 'username', autocomplete: 'username', required: true });
  const pass = h('input', { name: 'password', type: 'password', autocomplete: 'current-password' });
  const form = h('form', {
    onsubmit: async (ev) => {
      ev.preventDefault();
      fill(error);
      try {
        const who = await whoami(user.value, pass.value);
        if (!who.tags || (Array.isArray(who.tags) ? who.tags.length === 0 : who.tags === '')) {
          throw new Error('This user has no management tag, so it may not use the management UI.');
        }
        session.save(user.value, pass.value);
        location.hash = '#/';
        start();
      } catch (e) {
        fill(error, h('div', { class: 'form-error', role: 'alert' },
          e.status === 401 ? 'Login failed: wrong username or password, or this user may not log in from here.' : explain(e)));
      }
    },
  },
  h('label', {}, 'Username', user), h('label', {}, 'Password', pass), h('button', { type: 'submit' }, 'Log in'), error);
  fill(document.getElementById('app'), h('div', { class: 'login' },
    h('h1', {}, 'FerryMQ'), h('p', {}, 'Management — log in with a broker user.'), form));
  user.focus();
}

function logout() {
  session.clear();
  stopTimers();
  location.hash = '#/';
  loginPage();
}

const LOGO = () => {
  const el = h('span', { class: 'logo' });
  el.innerHTML = '<svg viewBox="0 0 32 32" aria-hidden="true"><rect width="32" height="32" rx="7" fill="#0e7490"/><path d="M6 20h20l-3 5H9z" fill="#fff"/><path d="M10 18V9h6l4 9z" fill="#a5f3fc"/></svg>';
  el.append('FerryMQ');
  return el;
};

async function layout() {
  const [who, overviewData, vhostList] = await Promise.all([get('/api/whoami'), get('/api/overview'), get('/api/vhosts')]);
  state.me = who;
  state.vhosts = vhostList;
  const vhostSelect = h('select', {
    id: 'vhost-filter', title: 'Show one virtual host',
    onchange: (ev) => { sessionStorage.setItem('ferrymq.vhost', ev.target.value); route(); },
  }, h('option', { value: '' }, 'All virtual hosts'), vhostList.map((v) => h('option', { value: v.name }, v.name)));
  vhostSelect.value = currentVhost();
  const refresh = h('select', {
    title: 'Refresh every',
    onchange: (ev) => { state.refreshMs = Number(ev.target.value); localStorage.setItem('ferrymq.refresh', ev.target.value); route(); },
  }, [[2000, 'Every 2 s'], [5000, 'Every 5 s'], [10000, 'Every 10 s'], [30000, 'Every 30 s'], [0, 'No refresh']].map(([v, l]) => h('option', { value: v }, l)));
  refresh.value = String(state.refreshMs);
  const nav = h('nav', { class: 'side' }, NAV.map(([group, items]) => [
    group ? h('div', { class: 'group' }, group) : null,
    items.map(([path, label]) => h('a', { href: '#/' + path, 'data-nav': path || 'overview' }, label)),
  ]));
  fill(document.getElementById('app'), h('div', { class: 'shell' },
    h('header', { class: 'top' }, LOGO(), h('span', { class: 'cluster', title: 'Cluster name' }, overviewData.cluster_name),
      h('span', { class: 'spacer' }), vhostSelect, refresh,
      h('span', { class: 'who' }, 'User ', h('strong', { id: 'whoami' }, who.name)),
      h('button', { type: 'button', id: 'logout', onclick: logout }, 'Log out')),
    nav, h('main', { id: 'main' })));
}

/** Re-reads the vhost list (after a vhost was added or deleted). */
export async function reloadVhosts() {
  state.vhosts = await get('/api/vhosts');
  const sel = document.getElementById('vhost-filter');
  if (sel) {
    const cur = sel.value;
    fill(sel, h('option', { value: '' }, 'All virtual hosts'), state.vhosts.map((v) => h('option', { value: v.name }, v.name)));
    sel.value = state.vhosts.some((v) => v.name === cur) ? cur : '';
  }
}

async function route() {
  stopTimers();
  const path = location.hash.replace(/^#\/?/, '');
  const main = document.getElementById('main');
  if (!main) return;
  const found = match(path);
  document.querySelectorAll('nav.side a').forEach((a) => a.classList.toggle('active', found && a.getAttribute('href') === '#/' + found.key));
  if (!found) {
    fill(main, h('h1', {}, 'Not found'), h('p', {}, 'There is no page at ', h('code', {}, location.hash), '.'));
    return;
  }
  const ctx = {
    params: found.params,
    vhost: currentVhost(),
    main,
    every: (fn) => {
      const run = async () => {
        try { await fn(); } catch (e) { if (e.status !== 401) console.warn(e); }
      };
      run();
      if (state.refreshMs > 0) state.timers.push(setInterval(run, state.refreshMs));
    },
  };
  fill(main);
  document.title = `${found.page.title || 'FerryMQ'} · FerryMQ`;
  try {
    await found.page.render(ctx);
  } catch (e) {
    fill(main, h('h1', {}, found.page.title || 'Error'), h('div', { class: 'form-error', role: 'alert' }, explain(e)));
  }
}

async function start() {
  if (!session.token) return loginPage();
  try {
    await layout();
  } catch (e) {
    if (e.status === 401) { session.clear(); return loginPage('Your session has ended. Please log in again.'); }
    fill(document.getElementById('app'), h('div', { class: 'login' }, h('h1', {}, 'FerryMQ'), h('div', { class: 'form-error', role: 'alert' }, explain(e))));
    return;
  }
  route();
}

whenUnauthorized(() => { session.clear(); loginPage('Your session has ended. Please log in again.'); });
window.addEventListener('hashchange', () => { if (session.token) route(); });
start();

export { api, seg };
