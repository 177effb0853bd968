// End-to-end tests of "Lend this tab": a real `kiln up` (coordinator + a native local worker),
// real headless Chromium whose tab connects to /ws/worker from a Web Worker, and jobs
// submitted and cancelled with the real `kiln` CLI. The tab trains on WebGPU (Chromium's
// SwiftShader adapter: slow, so the jobs are a few steps).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BIN, SHOTS, TOKEN, endSession, startSession } from './support.mjs';

const run = promisify(execFile);
let session, base, dataDir, page, pageErrors;

async function api(path, init = {}) {
  const res = await fetch(base + path, { ...init, headers: { authorization: `Bearer ${TOKEN}` } });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** `kiln <args>` against the test's coordinator. */
async function cli(...args) {
  const { stdout } = await run(BIN, args, {
    env: { ...process.env, KILN_SERVER: base, KILN_TOKEN: TOKEN },
  });
  return stdout;
}

async function waitForJob(id, test, what, ms = 240_000) {
  const end = Date.now() + ms;
  for (;;) {
    const job = (await api(`/api/jobs/${id}`)).body;
    if (test(job)) return job;
    if (Date.now() > end) throw new Error(`job ${id} (${job.state}): waited for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function specFile(name, device, { steps = 8, epochs = 1 } = {}) {
  const path = join(dataDir, `${name}.toml`);
  writeFileSync(path, `name = "${name}"
device = "${device}"
seed = 1
[model]
kind = "mlp"
hidden = [32]
[dataset]
kind = "idx"
path = "kiln:mnist-subset"
[optimizer]
lr = 3e-3
[training]
batch_size = 32
epochs = ${epochs}
max_steps = ${steps}
log_every = 1
`);
  return path;
}

const jobId = (out) => Number(out.match(/job (\d+)/)?.[1]);

before(async () => {
  session = await startSession('lend', { webgpu: true });
  ({ base, dataDir, errors: pageErrors } = session);
  page = await session.ctx.newPage();
  await page.goto(`${base}/workers`);
  await page.click('#lend-tab');
  await page.locator('.lend-status[data-connected="true"]').waitFor({ timeout: 60_000 });
});

after(() => endSession(session));

test('a lent tab is a worker: it offers webgpu, shows in the list, and takes a webgpu job submitted with kiln submit', async () => {
  const workers = (await api('/api/workers')).body;
  const tab = workers.find((w) => w.capabilities.browser);
  assert.ok(tab, JSON.stringify(workers));
  assert.match(tab.id, /^tab-/);
  assert.deepEqual(tab.capabilities.devices, ['webgpu']);
  assert.match(tab.capabilities.device_names[0], /webgpu/);
  // The workers page lists it, live.
  await page.locator('table.workers td', { hasText: 'tab' }).first().waitFor();

  const out = await cli('submit', specFile('in-the-tab', 'webgpu'), '--no-upload');
  const id = jobId(out);
  assert.ok(id > 0, out);
  const done = await waitForJob(id, (j) => ['succeeded', 'failed', 'cancelled'].includes(j.state), 'the end');
  assert.equal(done.state, 'succeeded', JSON.stringify(done));
  assert.equal(done.worker_id, tab.id, 'the tab ran it');
  const metrics = (await api(`/api/jobs/${id}/metrics`)).body;
  const train = metrics.filter((m) => m.split === 'train');
  assert.equal(train.length, 8, JSON.stringify(metrics));
  assert.ok(train.at(-1).loss < train[0].loss, `loss ${train[0].loss} → ${train.at(-1).loss}`);
  const artifacts = (await api(`/api/jobs/${id}/artifacts`)).body.map((a) => a.name);
  for (const name of ['model.bpk', 'model.json', 'summary.json']) assert.ok(artifacts.includes(name), `${name} in ${artifacts}`);
  const logs = (await api(`/api/jobs/${id}/logs`)).body.map((l) => l.text).join('\n');
  assert.match(logs, /training in a browser tab on webgpu/, logs);
  const summary = (await api(`/api/jobs/${id}/artifacts/summary.json`)).body;
  assert.equal(summary.device, 'webgpu');
  assert.equal(summary.steps, 8);
  await page.screenshot({ path: join(SHOTS, 'lent-tab.png'), fullPage: true });
  assert.deepEqual(pageErrors, []);
});

test('an auto job never goes to a tab, and a webgpu job never to a machine', async () => {
  const auto = jobId(await cli('submit', specFile('auto-job', 'auto', { steps: 4 }), '--no-upload'));
  const done = await waitForJob(auto, (j) => j.state === 'succeeded', 'success');
  assert.doesNotMatch(done.worker_id, /^tab-/, 'a native worker ran the auto job');
  const tab = (await api('/api/workers')).body.find((w) => w.capabilities.browser);
  // With the tab gone, a webgpu job waits: the native worker does not take it.
  await page.click('#lend-tab');
  await page.locator('.lend-status[data-lending="false"]').waitFor();
  await waitForDisconnected(tab.id);
  const waiting = jobId(await cli('submit', specFile('waits-for-a-tab', 'webgpu', { steps: 2 }), '--no-upload'));
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal((await api(`/api/jobs/${waiting}`)).body.state, 'queued');
  // Lend again (the same worker id, from sessionStorage): it takes the job.
  await page.click('#lend-tab');
  const ran = await waitForJob(waiting, (j) => j.state === 'succeeded', 'the tab to run it');
  assert.equal(ran.worker_id, tab.id);
});

async function waitForDisconnected(id) {
  const end = Date.now() + 30_000;
  while (Date.now() < end) {
    const w = (await api('/api/workers')).body.find((x) => x.id === id);
    if (!w?.connected) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`worker ${id} still connected`);
}

test('a lent tab keeps its job while the page is blocked, kiln cancel stops it, and the tab takes the next one', async () => {
  await page.locator('.lend-status[data-connected="true"]').waitFor({ timeout: 60_000 });
  const long = jobId(await cli('submit', specFile('long-in-the-tab', 'webgpu', { steps: 100000, epochs: 1000 }), '--no-upload'));
  const started = await waitForJob(long, (j) => j.state === 'running' && j.step >= 2, 'two steps');
  await page.locator(`.lend-status[data-job="${long}"]`).waitFor();
  // The socket, its heartbeats and the training live in the Web Worker, not on the page's main
  // thread (which a hidden tab's browser throttles): with the page's thread blocked for 10 s —
  // over 3 heartbeats of 2 s, when the coordinator would drop the tab — the job goes on in the
  // same attempt and the tab stays connected.
  const tabId = (await api('/api/workers')).body.find((w) => w.capabilities.browser).id;
  await page.evaluate(() => { const end = Date.now() + 10_000; while (Date.now() < end) { /* block */ } });
  const after = (await api(`/api/jobs/${long}`)).body;
  assert.equal(after.state, 'running', JSON.stringify(after));
  assert.equal(after.attempts, started.attempts, 'the same attempt: the tab was not declared lost');
  assert.ok(after.step > started.step, `it trained while the page was blocked: ${started.step} → ${after.step}`);
  assert.ok((await api('/api/workers')).body.find((w) => w.id === tabId)?.connected);
  console.log(`# lent tab: page main thread blocked 10 s, job went on from step ${started.step} to ${after.step} in attempt ${after.attempts}`);
  await cli('cancel', String(long));
  const cancelled = await waitForJob(long, (j) => j.state === 'cancelled', 'cancelled', 60_000);
  assert.equal(cancelled.state, 'cancelled');
  await page.locator('.lend-status[data-job=""][data-connected="true"]').waitFor({ timeout: 30_000 });
  const next = jobId(await cli('submit', specFile('after-cancel', 'webgpu', { steps: 2 }), '--no-upload'));
  await waitForJob(next, (j) => j.state === 'succeeded', 'success');
  assert.deepEqual(pageErrors, []);
});
