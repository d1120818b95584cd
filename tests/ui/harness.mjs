// Test fixtures: FerryMQ processes on free ports and Debian's Chromium via playwright-core.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, '../..');
export const screenshots = join(repo, 'target', 'ui-screenshots');

export function freePort() {
  return new Promise((ok, fail) => {
    const s = net.createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a truthy value or `secs` pass. */
export async function eventually(what, check, secs = 15) {
  const deadline = Date.now() + secs * 1000;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) { last = e; }
    await sleep(150);
  }
  throw new Error(`timed out waiting for ${what}${last ? ': ' + last.message : ''}`);
}

/** A FerryMQ broker in its own data directory; stop() kills it and removes the directory. */
export async function startBroker(name) {
  const bin = process.env.FERRYMQ_BIN || join(repo, 'target', 'debug', 'ferrymq');
  const dir = mkdtempSync(join(tmpdir(), `ferrymq-ui-${name}-`));
  const amqp = await freePort();
  const http = await freePort();
  const child = spawn(bin, ['--amqp-bind', `127.0.0.1:${amqp}`, '--http-bind', `127.0.0.1:${http}`, '--data-dir', join(dir, 'data')],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => { log = (log + d).slice(-20000); });
  const broker = {
    name, amqp, http, url: `http://127.0.0.1:${http}`,
    log: () => log,
    async api(method, path, body) {
      const r = await fetch(`http://127.0.0.1:${http}${path}`, {
        method,
        headers: { authorization: 'Basic ' + Buffer.from('guest:guest').toString('base64'), 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await r.text();
      return { status: r.status, body: text ? JSON.parse(text) : null };
    },
    async stop() {
      child.kill('SIGTERM');
      await Promise.race([new Promise((r) => child.once('exit', r)), sleep(5000)]);
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await eventually(`${name} to listen`, async () => (await fetch(`${broker.url}/api/overview`)).status === 401);
  return broker;
}

/** Headless Chromium from Debian (no browser download). */
export async function launchBrowser() {
  mkdirSync(screenshots, { recursive: true });
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
}
