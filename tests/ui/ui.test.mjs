// End-to-end tests of the web UI in Debian's Chromium: every form used for real
// against a FerryMQ started here, a second FerryMQ as the federation upstream, bad
// input in each form shown in words and changing nothing. Screenshots of the main
// pages land in target/ui-screenshots/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startBroker, launchBrowser, eventually, screenshots } from './harness.mjs';

let broker; // the broker whose UI is under test (the new cluster)
let upstream; // the old cluster it federates from
let browser;
let page;

const shot = (name) => page.screenshot({ path: join(screenshots, `${name}.png`), fullPage: true });
const go = async (hash) => {
  await page.goto(`${broker.url}/#/${hash}`);
  await page.locator('main h1').first().waitFor();
};
/** Submits a form and returns the error it shows. */
async function submitExpectingError(formId) {
  await page.locator(`#${formId} button[type=submit]`).click();
  const err = page.locator(`#${formId} .form-error`);
  await err.waitFor();
  return err.textContent();
}
async function submitExpectingOk(formId) {
  await page.locator(`#${formId} button[type=submit]`).click();
  const ok = page.locator(`#${formId} .form-ok`);
  const err = page.locator(`#${formId} .form-error`);
  await Promise.race([ok.waitFor(), err.waitFor()]);
  if (await err.count()) assert.fail(`form ${formId} failed: ${await err.textContent()}`);
  return ok.textContent();
}
const field = (formId, name) => page.locator(`#${formId} [name="${name}"]`);

before(async () => {
  [broker, upstream] = await Promise.all([startBroker('new'), startBroker('old')]);
  browser = await launchBrowser();
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, acceptDownloads: true });
  page = await context.newPage();
  page.on('dialog', (d) => d.accept());
  page.on('pageerror', (e) => { throw new Error(`JavaScript error in the page: ${e.message}`); });
});

after(async () => {
  if (browser) await browser.close();
  await Promise.all([broker && broker.stop(), upstream && upstream.stop()]);
});

test('login refuses a wrong password in words, then logs in', async () => {
  await page.goto(broker.url + '/');
  await page.locator('.login input[name=username]').fill('guest');
  await page.locator('.login input[name=password]').fill('wrong');
  await shot('login');
  await page.locator('.login button[type=submit]').click();
  const err = page.locator('.login .form-error');
  await err.waitFor();
  assert.match(await err.textContent(), /wrong username or password/);
  await page.locator('.login input[name=password]').fill('guest');
  await page.locator('.login button[type=submit]').click();
  await page.locator('#whoami').waitFor();
  assert.equal(await page.locator('#whoami').textContent(), 'guest');
  await page.locator('#total-queues').waitFor();
});

test('create a vhost; an empty name is refused and creates nothing', async () => {
  await go('vhosts');
  const before = (await broker.api('GET', '/api/vhosts')).body.length;
  assert.match(await submitExpectingError('add-vhost'), /Name is required/);
  assert.equal((await broker.api('GET', '/api/vhosts')).body.length, before);
  await field('add-vhost', 'name').fill('ui-vhost');
  await field('add-vhost', 'description').fill('made in the browser');
  await submitExpectingOk('add-vhost');
  await page.locator('#vhosts-table tr[data-key="ui-vhost"]').waitFor();
  const v = await broker.api('GET', '/api/vhosts/ui-vhost');
  assert.equal(v.status, 200);
  assert.equal(v.body.description, 'made in the browser');
  await shot('vhosts');
});

test('create queues; bad arguments and an inequivalent redeclare are explained', async () => {
  await go('queues');
  await field('add-queue', 'name').fill('metric.cpu');
  await field('add-queue', 'arguments').fill('{"x-max-length": ');
  assert.match(await submitExpectingError('add-queue'), /Arguments is not valid JSON/);
  assert.equal((await broker.api('GET', '/api/queues/%2F/metric.cpu')).status, 404, 'nothing declared');
  // The helper adds a key to the JSON.
  await field('add-queue', 'arguments').fill('');
  await page.locator('#add-queue .helper select').selectOption('x-max-length');
  await page.locator('#add-queue .helper button').click();
  assert.deepEqual(JSON.parse(await field('add-queue', 'arguments').inputValue()), { 'x-max-length': 10000 });
  await submitExpectingOk('add-queue');
  // Declaring it again as transient is refused by the broker, and the reason is shown.
  await field('add-queue', 'durable').uncheck();
  assert.match(await submitExpectingError('add-queue'), /inequivalent arg 'durable'/);
  const q = await broker.api('GET', '/api/queues/%2F/metric.cpu');
  assert.equal(q.body.durable, true);
  assert.equal(q.body.arguments['x-max-length'], 10000);
  await field('add-queue', 'durable').check();
  await field('add-queue', 'name').fill('ui-q');
  await field('add-queue', 'arguments').fill('');
  await submitExpectingOk('add-queue');
  await page.locator('#queues-table a', { hasText: 'ui-q' }).waitFor();
  // Search filters the list on the server.
  await page.locator('#queue-filter').fill('metric');
  await eventually('the filtered list', async () => (await page.locator('#queues-table tbody tr').count()) === 1);
  await page.locator('#queue-filter').fill('');
  await eventually('the full list', async () => (await page.locator('#queues-table tbody tr').count()) === 2);
  await shot('queues');
});

test('create a federation policy; bad definitions are refused before they are sent', async () => {
  await go('policies');
  await field('policy-form', 'name').fill('federate-metrics');
  await field('policy-form', 'pattern').fill('^metric\\.');
  await field('policy-form', 'definition').fill('{"max-length": -5}');
  assert.match(await submitExpectingError('policy-form'), /max-length must be a whole number/);
  await field('policy-form', 'definition').fill('{federation');
  assert.match(await submitExpectingError('policy-form'), /not valid JSON/);
  await field('policy-form', 'pattern').fill('^metric(');
  await field('policy-form', 'definition').fill('{"federation-upstream-set": "all"}');
  assert.match(await submitExpectingError('policy-form'), /not a valid regular expression/);
  assert.deepEqual((await broker.api('GET', '/api/policies')).body, [], 'no policy was created');
  await field('policy-form', 'pattern').fill('^metric\\.');
  await field('policy-form', 'apply-to').selectOption('queues');
  await submitExpectingOk('policy-form');
  await page.locator('#policies-table tr[data-key="//federate-metrics"]').waitFor();
  // Operator policies take limits only.
  await field('operator-policy-form', 'name').fill('cap');
  await field('operator-policy-form', 'pattern').fill('.*');
  await field('operator-policy-form', 'definition').fill('{"federation-upstream": "old"}');
  assert.match(await submitExpectingError('operator-policy-form'), /may only set limits/);
  await field('operator-policy-form', 'definition').fill('{"max-length": 1000000}');
  await submitExpectingOk('operator-policy-form');
  const p = await broker.api('GET', '/api/policies/%2F/federate-metrics');
  assert.equal(p.body.definition['federation-upstream-set'], 'all');
  assert.equal((await broker.api('GET', '/api/operator-policies/%2F/cap')).body.definition['max-length'], 1000000);
  await shot('policies');
});

test('add an upstream: the link appears for the matching queue and shows the old backlog', async () => {
  // The old cluster holds metric.cpu with a backlog.
  assert.equal((await upstream.api('PUT', '/api/queues/%2F/metric.cpu', { durable: true })).status, 201);
  for (let i = 0; i < 3; i++) {
    const r = await upstream.api('POST', '/api/exchanges/%2F/amq.default/publish',
      { routing_key: 'metric.cpu', payload: `old-${i}`, payload_encoding: 'string', properties: { delivery_mode: 2 } });
    assert.equal(r.body.routed, true);
  }
  await go('federation');
  await page.locator('#link-count', { hasText: 'Links: 0' }).waitFor();
  await field('upstream-form', 'name').fill('old');
  await field('upstream-form', 'uri').fill('http://old-host:15672');
  assert.match(await submitExpectingError('upstream-form'), /not an AMQP URI/);
  await field('upstream-form', 'uri').fill(`amqp://guest:guest@127.0.0.1:notaport`);
  assert.match(await submitExpectingError('upstream-form'), /bad port/);
  await field('upstream-form', 'uri').fill(`amqp://guest:guest@127.0.0.1:${upstream.amqp}`);
  await field('upstream-form', 'prefetch-count').fill('-1');
  assert.match(await submitExpectingError('upstream-form'), /Prefetch count must be a whole number/);
  assert.deepEqual((await broker.api('GET', '/api/parameters/federation-upstream')).body, []);
  await field('upstream-form', 'prefetch-count').fill('500');
  await submitExpectingOk('upstream-form');
  await page.locator('#link-count', { hasText: 'Links: 1' }).waitFor({ timeout: 15000 });
  const row = page.locator('#links-table tr[data-key="//metric.cpu/old"]');
  await row.locator('.badge', { hasText: /paused|running/ }).waitFor({ timeout: 15000 });
  // Credentials are never shown.
  const shown = await page.locator('#upstreams-table').textContent();
  assert.ok(!shown.includes('guest:guest'), shown);
  assert.ok(shown.includes('guest:***@'), shown);
  // Editing another field keeps the hidden password.
  await page.locator('#upstreams-table tr[data-key="//old"] button', { hasText: 'Edit' }).click();
  assert.match(await field('upstream-form', 'uri').inputValue(), /guest:\*\*\*@/);
  await field('upstream-form', 'prefetch-count').fill('250');
  await submitExpectingOk('upstream-form');
  const defs = (await broker.api('GET', '/api/definitions')).body;
  const up = defs.parameters.find((x) => x.name === 'old').value;
  assert.equal(up.uri, `amqp://guest:guest@127.0.0.1:${upstream.amqp}`);
  assert.equal(up['prefetch-count'], 250);
  await row.locator('td', { hasText: '3' }).first().waitFor({ timeout: 15000 });
  // An upstream set.
  await field('upstream-set-form', 'name').fill('olds');
  assert.match(await submitExpectingError('upstream-set-form'), /at least one upstream/);
  await field('upstream-set-form', 'upstreams').fill('old');
  await submitExpectingOk('upstream-set-form');
  await page.locator('#upstream-sets-table', { hasText: 'olds' }).waitFor();
  await shot('federation');
});

test('the migration view shows both sides of the federated queue', async () => {
  await go('migration');
  const row = page.locator('#migration-table tbody tr', { hasText: 'metric.cpu' });
  await row.waitFor();
  // Three messages wait upstream; no consumer here yet, so nothing moved.
  await eventually('the upstream depth', async () => (await row.locator('td.left-upstream').textContent()) === '3');
  assert.match(await row.textContent(), /waiting for consumers/);
  await page.locator('#migration-phase .phase-steps').waitFor();
  await shot('migration');
});

test('bind, publish and get a message from the exchange and queue pages', async () => {
  await go(`exchanges/${encodeURIComponent('/')}/amq.direct`);
  await field('bind-exchange', 'destination').fill('ui-q');
  await field('bind-exchange', 'routing_key').fill('ui');
  await submitExpectingOk('bind-exchange');
  await field('publish', 'routing_key').fill('ui');
  await field('publish', 'headers').fill('{"x-trace": ');
  assert.match(await submitExpectingError('publish'), /Headers is not valid JSON/);
  assert.equal((await broker.api('GET', '/api/queues/%2F/ui-q')).body.messages, 0, 'nothing published');
  await field('publish', 'headers').fill('{"x-trace": "t-1"}');
  await field('publish', 'properties').fill('{"message_id": "m-1", "content_type": "text/plain"}');
  await field('publish', 'payload').fill('hello from the UI');
  assert.match(await submitExpectingOk('publish'), /routed/);
  await field('publish', 'routing_key').fill('nowhere');
  assert.match(await submitExpectingOk('publish'), /not routed/);
  await shot('exchange');
  await eventually('the message in ui-q', async () => (await broker.api('GET', '/api/queues/%2F/ui-q')).body.messages === 1);

  await go(`queues/${encodeURIComponent('/')}/ui-q`);
  await field('get-messages', 'count').fill('0');
  assert.match(await submitExpectingError('get-messages'), /at least 1/);
  await field('get-messages', 'count').fill('1');
  await submitExpectingOk('get-messages');
  const got = page.locator('#got-messages .payload');
  await got.waitFor();
  assert.equal(await got.textContent(), 'hello from the UI');
  assert.match(await page.locator('#got-messages').textContent(), /m-1/);
  await shot('queue');
  await page.locator('button[data-action=purge]').click();
  await eventually('the purge', async () => (await broker.api('GET', '/api/queues/%2F/ui-q')).body.messages === 0);
  await page.locator('button[data-action=delete-queue]').click();
  await eventually('the delete', async () => (await broker.api('GET', '/api/queues/%2F/ui-q')).status === 404);
  await page.waitForURL(/#\/queues$/);
});

test('users and permissions; missing password, unknown tags and bad regexps are refused', async () => {
  await go('users');
  await field('add-user', 'name').fill('ops');
  assert.match(await submitExpectingError('add-user'), /needs a password/);
  await field('add-user', 'password').fill('s3cret-ops');
  await field('add-user', 'tags').fill('monitoring, wizard');
  assert.match(await submitExpectingError('add-user'), /Unknown tag wizard/);
  assert.equal((await broker.api('GET', '/api/users/ops')).status, 404);
  await field('add-user', 'tags').fill('monitoring');
  await submitExpectingOk('add-user');
  await page.locator('#users-table tr[data-key="ops"]').waitFor();
  await field('set-permission', 'user').fill('ops');
  await field('set-permission', 'vhost').selectOption('ui-vhost');
  await field('set-permission', 'read').fill('(');
  assert.match(await submitExpectingError('set-permission'), /read pattern is not a valid regular expression/);
  assert.equal((await broker.api('GET', '/api/permissions/ui-vhost/ops')).status, 404);
  await field('set-permission', 'read').fill('^metric\\.');
  await submitExpectingOk('set-permission');
  const perm = await broker.api('GET', '/api/permissions/ui-vhost/ops');
  assert.equal(perm.body.read, '^metric\\.');
  await page.locator('#permissions-table', { hasText: 'ui-vhost' }).waitFor();
  await shot('users');
});

test('definitions: download an export, refuse a broken file, import a good one', async () => {
  await go('definitions');
  const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#export-definitions').click()]);
  const dir = mkdtempSync(join(tmpdir(), 'ferrymq-ui-defs-'));
  const saved = join(dir, 'defs.json');
  await download.saveAs(saved);
  const defs = JSON.parse(readFileSync(saved, 'utf8'));
  assert.ok(defs.queues.some((q) => q.name === 'metric.cpu'));
  assert.ok(defs.policies.some((p) => p.name === 'federate-metrics'));
  const broken = join(dir, 'broken.json');
  writeFileSync(broken, '{"queues": [');
  await page.locator('#import-file').setInputFiles(broken);
  assert.match(await submitExpectingError('import-definitions'), /broken.json is not valid JSON/);
  defs.queues.push({ name: 'imported-q', vhost: 'ui-vhost', durable: true, auto_delete: false, arguments: {} });
  const good = join(dir, 'good.json');
  writeFileSync(good, JSON.stringify(defs));
  await page.locator('#import-file').setInputFiles(good);
  await submitExpectingOk('import-definitions');
  assert.equal((await broker.api('GET', '/api/queues/ui-vhost/imported-q')).status, 200);
  await shot('definitions');
});

test('overview, connections and the vhost filter render live data', async () => {
  await go('connections');
  await shot('connections');
  await go('');
  await page.locator('#total-links .v', { hasText: '1' }).waitFor();
  await page.locator('#rates-chart svg').waitFor();
  await page.selectOption('#vhost-filter', 'ui-vhost');
  await go('queues');
  await page.locator('#queues-table a', { hasText: 'imported-q' }).waitFor();
  assert.equal(await page.locator('#queues-table a', { hasText: 'metric.cpu' }).count(), 0, 'only ui-vhost is listed');
  await page.selectOption('#vhost-filter', '');
  await go('');
  await page.setViewportSize({ width: 420, height: 900 });
  await shot('overview-narrow');
  await page.setViewportSize({ width: 1360, height: 900 });
  await shot('overview');
});

test('a cross-site write is refused and logging out returns to the login form', async () => {
  const status = await page.evaluate(async (url) => {
    // Same request as a foreign page would send (the Origin header cannot be faked by page script, so use the API directly from Node below too).
    const r = await fetch(`${url}/api/vhosts/from-the-page`, { method: 'PUT', headers: { 'content-type': 'application/json', 'x-ferrymq-ui': '1', authorization: 'Basic ' + btoa('guest:guest') }, body: '{}' });
    return r.status;
  }, broker.url);
  assert.equal(status, 201, 'the UI\'s own origin may write');
  const cross = await fetch(`${broker.url}/api/vhosts/from-elsewhere`, {
    method: 'PUT',
    headers: { origin: 'http://evil.example', authorization: 'Basic ' + Buffer.from('guest:guest').toString('base64'), 'content-type': 'application/json' },
    body: '{}',
  });
  assert.equal(cross.status, 403);
  assert.match((await cross.json()).reason, /cross-origin/);
  assert.equal((await broker.api('GET', '/api/vhosts/from-elsewhere')).status, 404);
  await page.locator('#logout').click();
  await page.locator('.login input[name=username]').waitFor();
  await page.reload();
  await page.locator('.login input[name=username]').waitFor();
});
