// Policies and operator policies: tables and one form with a helper per definition
// key; the definition is checked before it is sent.
import { get, put, del, seg } from '../api.js';
import { h, fill, panel, table, action, form, invalid, keyHelper, vhostOptions, chips } from '../dom.js';
import { knownVhosts, currentVhost } from '../app.js';

// [key, template, description, check]; check returns an error text or null.
const posInt = (v) => (Number.isInteger(v) && v >= 0 ? null : 'a whole number ≥ 0');
const text = (v) => (typeof v === 'string' && v.length ? null : 'a non-empty string');
const oneOf = (...xs) => (v) => (xs.includes(v) ? null : `one of ${xs.join(', ')}`);
const KEYS = [
  ['federation-upstream-set', 'all', 'federate matching queues from every upstream in a set ("all" = every upstream)', text],
  ['federation-upstream', 'my-upstream', 'federate matching queues from one upstream', text],
  ['max-length', 10000, 'most messages a queue keeps', posInt],
  ['max-length-bytes', 104857600, 'most bytes of bodies a queue keeps', posInt],
  ['overflow', 'drop-head', 'what happens at the limit', oneOf('drop-head', 'reject-publish', 'reject-publish-dlx')],
  ['message-ttl', 60000, 'milliseconds a message may wait', posInt],
  ['expires', 1800000, 'milliseconds unused before a queue is deleted', (v) => (Number.isInteger(v) && v >= 1 ? null : 'a whole number ≥ 1')],
  ['dead-letter-exchange', 'dlx', 'exchange for dead letters', text],
  ['dead-letter-routing-key', 'dead', 'routing key for dead letters', text],
  ['alternate-exchange', 'unrouted', 'exchange for unroutable messages (exchanges)', text],
  ['queue-mode', 'lazy', 'accepted for compatibility: every FerryMQ queue pages to disk', oneOf('default', 'lazy')],
];
const OPERATOR_KEYS = ['max-length', 'max-length-bytes', 'message-ttl', 'expires'];

/** Parses and checks a definition; throws a readable error. */
export function checkDefinition(textValue, operator) {
  let d;
  try { d = JSON.parse(textValue || ''); } catch (e) { invalid(`The definition is not valid JSON: ${e.message}`); }
  if (d === null || typeof d !== 'object' || Array.isArray(d)) invalid('The definition must be a JSON object, like {"max-length": 1000}.');
  if (Object.keys(d).length === 0) invalid('The definition is empty: add at least one key.');
  for (const [k, v] of Object.entries(d)) {
    if (operator && !OPERATOR_KEYS.includes(k)) invalid(`Operator policies may only set limits (${OPERATOR_KEYS.join(', ')}), not ${k}.`);
    const known = KEYS.find(([name]) => name === k);
    if (known) {
      const err = known[3](v);
      if (err) invalid(`${k} must be ${err}, not ${JSON.stringify(v)}.`);
    }
  }
  if ('federation-upstream' in d && 'federation-upstream-set' in d) invalid('Use federation-upstream or federation-upstream-set, not both.');
  return d;
}

function section(kind, ctx) {
  const operator = kind === 'operator-policies';
  const body = h('div');
  const keys = KEYS.filter(([k]) => !operator || OPERATOR_KEYS.includes(k));
  const f = form([
    { name: 'vhost', label: 'Virtual host', type: 'select', options: vhostOptions(knownVhosts()), value: currentVhost() || '/' },
    { name: 'name', label: 'Name', required: true },
    { name: 'pattern', label: 'Pattern', placeholder: '^metric\\.', help: 'A regular expression over queue (or exchange) names.' },
    { name: 'apply-to', label: 'Apply to', type: 'select', options: operator ? [['queues', 'Queues']] : [['queues', 'Queues'], ['exchanges', 'Exchanges'], ['all', 'Exchanges and queues']] },
    { name: 'priority', label: 'Priority', type: 'number', value: 0, help: 'The highest priority policy matching an object wins.' },
    { name: 'definition', label: 'Definition (JSON)', type: 'textarea', placeholder: operator ? '{"max-length": 100000}' : '{"federation-upstream-set": "all"}', extra: keyHelper(keys.map(([k, t, d]) => [k, t, d])) },
  ], async (v) => {
    if (!v.name.trim()) invalid('Name is required.');
    if (!v.pattern) invalid('Pattern is required (use ".*" for everything).');
    try { new RegExp(v.pattern); } catch (e) { invalid(`The pattern is not a valid regular expression: ${e.message}`); }
    const priority = Number(v.priority || 0);
    if (!Number.isInteger(priority)) invalid('Priority must be a whole number.');
    const definition = checkDefinition(v.definition, operator);
    await put(`/api/${kind}/${seg(v.vhost)}/${seg(v.name.trim())}`, { pattern: v.pattern, 'apply-to': v['apply-to'], priority, definition });
    refresh();
    return `${operator ? 'Operator policy' : 'Policy'} ${v.name} saved.`;
  }, { id: operator ? 'operator-policy-form' : 'policy-form', submitLabel: operator ? 'Save operator policy' : 'Save policy' });
  const refresh = async () => {
    const list = await get(ctx.vhost ? `/api/${kind}/${seg(ctx.vhost)}` : `/api/${kind}`);
    fill(body, table([
      { label: 'Virtual host', value: (p) => p.vhost },
      { label: 'Name', value: (p) => h('strong', {}, p.name) },
      { label: 'Pattern', value: (p) => h('code', {}, p.pattern) },
      { label: 'Apply to', value: (p) => p['apply-to'] },
      { label: 'Definition', value: (p) => chips(p.definition) },
      { label: 'Priority', value: (p) => String(p.priority), num: true },
      { label: '', value: (p) => h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'small secondary', onclick: () => {
          f.setValues({ vhost: p.vhost, name: p.name, pattern: p.pattern, 'apply-to': p['apply-to'], priority: p.priority, definition: JSON.stringify(p.definition, null, 2) });
          f.scrollIntoView({ behavior: 'smooth' });
        } }, 'Edit'),
        action('Delete', async () => {
          await del(`/api/${kind}/${seg(p.vhost)}/${seg(p.name)}`);
          refresh();
          return `Policy ${p.name} deleted.`;
        }, { danger: true, confirm: `Delete policy ${p.name}? Matching objects go back to their own arguments.` })) },
    ], list, { id: `${kind}-table`, key: (p) => `${p.vhost}/${p.name}`, empty: operator ? 'No operator policies.' : 'No policies.' }));
  };
  return { body, form: f, refresh };
}

export default {
  title: 'Policies',
  async render(ctx) {
    const user = section('policies', ctx);
    const op = section('operator-policies', ctx);
    fill(ctx.main, h('h1', {}, 'Policies'),
      panel('User policies', user.body), panel('Add or update a policy', user.form),
      panel('Operator policies', h('p', { class: 'help' }, 'Limits an administrator imposes; the stricter of a queue\'s own argument, its policy and the operator policy applies.'), op.body),
      panel('Add or update an operator policy', op.form));
    ctx.every(async () => { await Promise.all([user.refresh(), op.refresh()]); });
  },
};
