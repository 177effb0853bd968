// End-to-end tests of the web dashboard: a real `kiln up` (coordinator + local worker, SQLite in
// a temp dir, real Burn training) and real headless Chromium from Debian, driven by
// playwright-core. Run by scripts/test after scripts/build-web; screenshots of every page go to
// tests/web/screenshots/ (or $KILN_SCREENSHOTS).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { BIN, CHROMIUM_ARGS, signIn, SHOTS, TOKEN, startKiln } from './support.mjs';

let kiln, base, dataDir, browser, ctx;
const pageErrors = [];

async function api(path, init = {}) {
  const res = await fetch(base + path, {
    ...init,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...(init.headers ?? {}) },
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function submit(spec) {
  const res = await api('/api/jobs', { method: 'POST', body: JSON.stringify({ spec }) });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.id;
}

async function waitForState(id, states, ms = 120_000) {
  const end = Date.now() + ms;
  for (;;) {
    const job = (await api(`/api/jobs/${id}`)).body;
    if (states.includes(job.state)) return job;
    if (Date.now() > end) throw new Error(`job ${id} is ${job.state}, waited for ${states}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A blob-classification spec; `hidden`/`epochs` set how long it trains. */
function blobs(name, { hidden = [32], epochs = 2, lr = 0.003, examples = 2048, features = 16, batch = 32 } = {}) {
  return {
    name, device: 'cpu',
    model: { kind: 'mlp', hidden },
    dataset: { kind: 'synthetic', examples, features, classes: 4, validation_fraction: 0.1 },
    optimizer: { kind: 'adam', lr },
    training: { batch_size: batch, epochs, log_every: 2, eval_every: 20 },
  };
}

const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
const badge = (page) => page.locator('section.job .title-row .badge').first();

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  dataDir = mkdtempSync(join(tmpdir(), 'kiln-web-e2e-'));
  ({ child: kiln, url: base } = await startKiln(dataDir));
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
  ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await ctx.addInitScript(signIn, TOKEN);
  ctx.on('weberror', (e) => pageErrors.push(e.error().message));
});

after(async () => {
  await browser?.close();
  kiln?.kill('SIGTERM');
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

let formJob;

test('a job submitted from the form appears in the list, charts grow while it runs, and it ends with its final accuracy', async () => {
  const page = await ctx.newPage();
  await page.goto(`${base}/new`);
  const fill = (path, value) => page.fill(`#f-${path.replaceAll('.', '-')}`, value);
  // W1's shape, wider, on the committed MNIST subset: long enough (≈ 10 s) to watch live.
  await page.selectOption('#preset', 'mnist-mlp');
  await fill('name', 'e2e-form');
  await fill('model.hidden', '1024, 1024');
  await fill('dataset.validation_fraction', '0.1');
  await fill('training.epochs', '20');
  await fill('training.log_every', '2');
  await fill('training.eval_every', '25');
  await fill('training.checkpoint_every', '200');
  await page.fill('#f-tags', 'e2e, wide');
  await shot(page, 'new-job');
  await page.click('button[type=submit]');
  await page.waitForURL(/\/jobs\/\d+$/);
  formJob = Number(page.url().match(/\/jobs\/(\d+)$/)[1]);
  assert.deepEqual((await api(`/api/jobs/${formJob}`)).body.tags, ['e2e', 'wide']);

  // The list, in another tab, shows it.
  const list = await ctx.newPage();
  await list.goto(`${base}/`);
  await list.locator(`tr[data-job-id="${formJob}"]`).waitFor();
  assert.match(await list.locator(`tr[data-job-id="${formJob}"]`).innerText(), /e2e-form/);

  // Points arrive over /ws/events while the job runs.
  const canvas = page.locator('.chart-loss canvas');
  const seenWhileRunning = [];
  const end = Date.now() + 180_000;
  for (;;) {
    const state = await badge(page).innerText();
    const points = Number(await canvas.getAttribute('data-points'));
    if (state === 'running') seenWhileRunning.push(points);
    if (state === 'succeeded') break;
    assert.ok(!['failed', 'cancelled'].includes(state), `job ended ${state}`);
    assert.ok(Date.now() < end, 'job did not finish in time');
    await page.waitForTimeout(100);
  }
  const distinct = [...new Set(seenWhileRunning.filter((n) => n > 0))];
  assert.ok(distinct.length >= 2, `chart did not grow while running: ${seenWhileRunning}`);
  for (let i = 1; i < distinct.length; i++) assert.ok(distinct[i] > distinct[i - 1], `${distinct}`);

  // Final accuracy on the page is the coordinator's last val accuracy.
  const metrics = (await api(`/api/jobs/${formJob}/metrics?split=val`)).body;
  const last = metrics.at(-1).accuracy;
  await page.locator('.finals[data-final-accuracy]:not([data-final-accuracy=""])').waitFor();
  const shown = await page.locator('.final-accuracy').innerText();
  const m = shown.match(/val (\d\.\d+)/);
  assert.ok(m, `final accuracy not shown: ${shown}`);
  assert.ok(Math.abs(Number(m[1]) - last) < 1e-3, `${shown} vs ${last}`);
  // The list shows it finished, live.
  await list.locator(`tr[data-job-id="${formJob}"][data-state="succeeded"]`).waitFor();
  // The worker column names the worker (kiln up's local worker), not its id.
  assert.match(await list.locator(`tr[data-job-id="${formJob}"]`).innerText(), /\(local\)/);
  assert.match(await page.locator('dl.facts').innerText(), /\(local\)/, 'the worker by name');
  assert.match(await page.locator('table.attempts').innerText(), /\(local\)/);
  await shot(page, 'job');
  await shot(list, 'jobs');
  await list.close();
  await page.close();
});

test('invalid form input shows the error at its field and creates no job', async () => {
  const before = (await api('/api/jobs')).body.total;
  const page = await ctx.newPage();
  await page.goto(`${base}/new`);
  await page.fill('#f-name', 'bad name!');
  await page.fill('#f-training-batch_size', '0');
  await page.fill('#f-optimizer-lr', 'fast');
  await page.click('button[type=submit]');
  const errorAt = (path) => page.locator(`[data-field="${path}"] .field-error`);
  await errorAt('training.batch_size').waitFor();
  assert.match(await errorAt('training.batch_size').innerText(), /training\.batch_size: got 0, allowed/);
  assert.match(await errorAt('optimizer.lr').innerText(), /`fast`/);
  assert.match(await errorAt('name').innerText(), /name: got/);
  assert.equal(await page.locator('#f-training-batch_size').getAttribute('aria-invalid'), 'true');
  assert.equal(await errorAt('model.hidden').count(), 1);
  assert.equal(await errorAt('model.hidden').innerText(), '');
  assert.match(page.url(), /\/new$/);
  await page.waitForTimeout(500);
  assert.equal((await api('/api/jobs')).body.total, before, 'a job was created');
  await shot(page, 'new-job-errors');
  // A valid spec with a bad tag: the tag is named at its input, still no job.
  await page.goto(`${base}/new`);
  await page.fill('#f-tags', 'ok, has!bang');
  await page.click('button[type=submit]');
  await errorAt('tags').filter({ hasText: 'has!bang' }).waitFor();
  assert.equal(await page.locator('#f-tags').getAttribute('aria-invalid'), 'true');
  await page.waitForTimeout(300);
  assert.match(page.url(), /\/new$/);
  assert.equal((await api('/api/jobs')).body.total, before, 'a job was created');
  await page.close();
});

test('cancel from the job page stops a running job', async () => {
  const id = await submit(blobs('e2e-cancel', { hidden: [1024, 1024], features: 256, examples: 20000, batch: 256, epochs: 1000 }));
  const page = await ctx.newPage();
  // The cancel's HTTP answer (job still `running`, cancel requested) is held back 1.5 s, so
  // the `cancelled` event over /ws/events arrives first — a slow network, which a local
  // socket cannot produce for real. The page must not go back to `running` when it lands.
  let answered = false;
  await page.route('**/api/jobs/*/cancel', async (route) => {
    const response = await route.fetch();
    await new Promise((r) => setTimeout(r, 1500));
    await route.fulfill({ response });
    answered = true;
  });
  await page.goto(`${base}/jobs/${id}`);
  // On a timeout, say where the job and the page were.
  const step = async (what, fn) => {
    try {
      await fn();
    } catch (e) {
      const job = (await api(`/api/jobs/${id}`)).body;
      const shown = await page.locator('section.job .title-row').innerText().catch(() => '?');
      throw new Error(`${what}: ${e.message.split('\n')[0]}; job is ${job.state} at step ${job.step}; page shows ${JSON.stringify(shown)}`);
    }
  };
  try {
    await step('wait for running', () => page.locator('section.job .title-row .badge.running').waitFor({ timeout: 60_000 }));
    await step('click Cancel', () => page.getByRole('button', { name: 'Cancel' }).click({ timeout: 10_000 }));
    await step('wait for cancelled', () => page.locator('section.job .title-row .badge.cancelled').waitFor({ timeout: 30_000 }));
    assert.equal((await api(`/api/jobs/${id}`)).body.state, 'cancelled');
    for (let i = 0; i < 40 && !answered; i++) await page.waitForTimeout(100);
    assert.ok(answered, 'the held-back cancel answer was delivered');
    await page.waitForTimeout(300);
    assert.equal(await badge(page).innerText(), 'cancelled', 'a stale answer put an older state back');
    assert.equal(await page.getByRole('button', { name: 'Retry' }).count(), 1);
  } finally {
    await api(`/api/jobs/${id}/cancel`, { method: 'POST' }); // never leave it running
    await page.close();
  }
});

/** The step N of the first log line of job `id` that reads `prefix` N `suffix`. */
async function loggedStep(id, prefix, suffix = '', ms = 60_000) {
  const end = Date.now() + ms;
  for (;;) {
    const lines = (await api(`/api/jobs/${id}/logs?limit=10000`)).body.map((e) => e.text);
    for (const l of lines) {
      if (l.startsWith(prefix) && l.endsWith(suffix)) {
        const n = Number(l.slice(prefix.length, l.length - suffix.length));
        if (Number.isInteger(n)) return n;
      }
    }
    if (Date.now() > end) throw new Error(`job ${id}'s log never said ${prefix}N${suffix}: ${lines.slice(-5)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('live control from the job page: pause holds the step, a new learning rate, a checkpoint now, and a fork from it', async () => {
  const id = await submit(blobs('e2e-control', { hidden: [512, 512], features: 128, examples: 20000, batch: 128, epochs: 1000 }));
  const page = await ctx.newPage();
  try {
    await page.goto(`${base}/jobs/${id}`);
    await page.locator('section.job .title-row .badge.running').waitFor({ timeout: 60_000 });
    await page.locator('#pause').click();
    await page.locator('#resume').waitFor({ timeout: 10_000 });
    const pausedAt = await loggedStep(id, 'paused after step ');
    await page.waitForTimeout(1000);
    const held = (await api(`/api/jobs/${id}`)).body;
    assert.equal(held.step, pausedAt, 'no step while paused');
    assert.ok(held.paused);
    await page.locator('.live-control .badge.paused').waitFor();

    await page.locator('#live-lr').fill('0.0005');
    await page.locator('.live-control form button[type=submit]').click();
    assert.equal(await loggedStep(id, 'learning rate 0.0005 from step '), pausedAt + 1);
    // A rate out of range is refused in the page, naming the field.
    await page.locator('#live-lr').fill('-1');
    await page.locator('.live-control form button[type=submit]').click();
    await page.getByText('lr: got -1').waitFor({ timeout: 5_000 });

    await page.locator('#resume').click();
    await page.locator('#pause').waitFor({ timeout: 10_000 });
    await loggedStep(id, 'resumed after step ');
    await page.locator('#checkpoint-now').click();
    const ckpt = await loggedStep(id, 'checkpoint at step ', ', as asked');
    assert.ok(ckpt >= pausedAt);
    // Each one is marked on the charts: pause, learning rate, resume, checkpoint.
    await page.waitForFunction(() => Number(document.querySelector('.chart-loss canvas')?.dataset.marks) === 4, null, { timeout: 10_000 });
    await shot(page, 'job-live-control');

    await page.locator('#fork-open').click();
    await page.locator(`#fork-step option[value="${ckpt}"]`).waitFor({ state: 'attached', timeout: 10_000 });
    await page.locator('#fork-step').selectOption(String(ckpt));
    await page.locator('#fork-max-steps').fill(String(ckpt + 10));
    await page.locator('#fork-submit').click();
    await page.waitForURL((u) => /\/jobs\/\d+$/.test(u.pathname) && u.pathname !== `/jobs/${id}`, { timeout: 10_000 });
    const forkId = Number(new URL(page.url()).pathname.split('/').pop());
    await page.locator('.forked-from').getByText(`#${id}`).waitFor({ timeout: 10_000 });
    // One local worker: the fork runs once the job it came from is stopped.
    await api(`/api/jobs/${id}/cancel`, { method: 'POST' });
    const fork = await waitForState(forkId, ['succeeded', 'failed', 'cancelled']);
    assert.equal(fork.state, 'succeeded', JSON.stringify(fork));
    assert.deepEqual(fork.forked_from, { job_id: id, step: ckpt });
    assert.deepEqual(fork.lr_changes, [{ step: pausedAt, lr: 0.0005 }]);
    const attempts = (await api(`/api/jobs/${forkId}/attempts`)).body;
    assert.equal(attempts[0].resumed_from_step, ckpt);
    const lrs = (await api(`/api/jobs/${forkId}/metrics`)).body.filter((p) => p.split === 'train').map((p) => p.lr);
    assert.ok(lrs.length > 0 && lrs.every((lr) => Math.abs(lr - 0.0005) < 1e-12), `the fork trains at the live rate: ${lrs}`);
  } finally {
    await api(`/api/jobs/${id}/cancel`, { method: 'POST' });
    await page.close();
  }
});

test('the jobs list: a fetch answer older than a live event does not put the old state back', async () => {
  const id = await submit(blobs('e2e-held-list', { hidden: [1024, 1024], features: 256, examples: 20000, batch: 256, epochs: 1000 }));
  await waitForState(id, ['running'], 60_000);
  const page = await ctx.newPage();
  // Every answer of GET /api/jobs (the list's fetch on load and on the events socket's
  // Welcome) is read at once, while the job runs, and held back until the job's `cancelled`
  // event is on the page: a slow network, which a local socket cannot produce for real.
  let release;
  const released = new Promise((r) => { release = r; });
  const held = []; // the job's state in each held answer
  let delivered = 0;
  await page.route((url) => url.pathname === '/api/jobs', async (route) => {
    const response = await route.fetch();
    held.push((await response.json()).jobs.find((j) => j.id === id)?.state);
    await released;
    await route.fulfill({ response });
    delivered++;
  });
  const row = page.locator(`tr[data-job-id="${id}"]`);
  try {
    await page.goto(`${base}/`);
    for (let i = 0; i < 300 && held.length < 2; i++) await page.waitForTimeout(100);
    assert.deepEqual(held, ['running', 'running'], 'both list fetches read the job running');
    assert.equal((await api(`/api/jobs/${id}/cancel`, { method: 'POST' })).status, 200);
    await waitForState(id, ['cancelled'], 60_000);
    // Only live events can have put the row there: every list answer is still held.
    await page.locator(`tr[data-job-id="${id}"][data-state="cancelled"]`).waitFor({ timeout: 30_000 });
    assert.equal(delivered, 0);
    release();
    for (let i = 0; i < 50 && delivered < held.length; i++) await page.waitForTimeout(100);
    assert.equal(delivered, held.length, 'the held answers were delivered');
    await page.waitForTimeout(300);
    assert.equal(await row.getAttribute('data-state'), 'cancelled', 'a stale list answer put an older state back');
    assert.equal(await row.locator('.badge').innerText(), 'cancelled');
  } finally {
    release();
    await api(`/api/jobs/${id}/cancel`, { method: 'POST' }); // never leave it running
    await page.close();
  }
});

test('a share link opens read-only without a token, and shows not-found once revoked', async () => {
  assert.ok(formJob, 'needs the job of the first test');
  const owner = await ctx.newPage();
  await owner.goto(`${base}/jobs/${formJob}`);
  await owner.getByRole('button', { name: 'Share' }).click();
  const link = await owner.locator('#share-link').inputValue();
  assert.match(link, new RegExp(`^${base}/s/[0-9a-f]{64}$`));
  // By default a link keeps the run's data private.
  await owner.locator('table.shares td', { hasText: 'private' }).waitFor();

  const anon = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const guest = await anon.newPage();
  await guest.goto(link);
  await guest.locator('[data-share="run"]').waitFor();
  await guest.locator('.chart-loss canvas:not([data-points="0"])').waitFor();
  assert.ok(Number(await guest.locator('.chart-loss canvas').getAttribute('data-points')) > 10);
  assert.match(await guest.locator('pre.spec').innerText(), /name = "e2e-form"/);
  assert.match(await guest.locator('.final-accuracy').innerText(), /val \d\.\d+/);
  // Read-only: no navigation into the coordinator, no actions, no token in this browser.
  for (const name of ['Cancel', 'Retry', 'Share', 'Revoke']) {
    assert.equal(await guest.getByRole('button', { name }).count(), 0, name);
  }
  assert.equal(await guest.locator('a[href="/workers"]').count(), 0);
  assert.equal(await guest.evaluate(() => localStorage.getItem('kiln.token')), null);
  await shot(guest, 'share');

  await owner.locator('table.shares').getByRole('button', { name: /revoke/i }).click();
  await owner.locator('table.shares td', { hasText: 'revoked' }).waitFor();
  await guest.reload();
  await guest.locator('[data-share="gone"]').waitFor();
  assert.match(await guest.locator('h1').innerText(), /Link not found/);
  await shot(guest, 'share-revoked');
  const token = link.split('/s/')[1];
  assert.equal((await fetch(`${base}/api/share/${token}`)).status, 404);
  await anon.close();
  await owner.close();
});

test('compare draws both runs and lists the hyperparameters that differ', async () => {
  const other = await submit(blobs('e2e-compare', { lr: 0.01 }));
  await waitForState(other, ['succeeded']);
  const page = await ctx.newPage();
  await page.goto(`${base}/compare?ids=${formJob},${other}&smooth=0.5`);
  await page.locator('.chart-loss canvas[data-series="2"]').waitFor();
  await page.locator('.chart-accuracy canvas[data-series="2"]').waitFor();
  // The smoothing of a deep link is applied and stays in the URL.
  assert.equal(await page.locator('.chart-loss canvas').getAttribute('data-smoothing'), '0.5');
  assert.equal(await page.inputValue('#smoothing'), '0.5');
  assert.match(page.url(), new RegExp(`ids=${formJob},${other}&smooth=0\\.5$`));
  const diff = await page.locator('table.compare tr.differs').allInnerTexts();
  assert.ok(diff.some((r) => r.includes('optimizer.lr')), diff.join('\n'));
  assert.ok(!diff.some((r) => r.startsWith('seed')), 'seed is the same in both');
  await shot(page, 'compare');
  await page.close();
});

test('tags and notes: set on the job page, kept, checked, and a tag filters the list', async () => {
  const page = await ctx.newPage();
  await page.goto(`${base}/jobs/${formJob}`);
  const add = page.locator('form.add-tag button');
  // A bad tag is named at its input and nothing is saved.
  await page.fill('#add-tag', 'has space');
  await add.click();
  assert.match(await page.locator('#add-tag-error').innerText(), /"has space"/);
  assert.equal(await page.locator('#add-tag').getAttribute('aria-invalid'), 'true');
  await page.fill('#add-tag', 'baseline');
  await page.press('#add-tag', 'Enter');
  const tag = page.locator('.annotations a.tag', { hasText: 'baseline' });
  await tag.waitFor();
  await page.getByRole('button', { name: 'Edit notes' }).click();
  await page.fill('#notes', 'wide MLP\nlr 1e-3 looks right');
  await page.getByRole('button', { name: 'Save notes' }).click();
  await page.locator('.notes-text', { hasText: 'wide MLP' }).waitFor();
  await page.reload();
  await tag.waitFor();
  assert.equal(await page.locator('.notes-text').innerText(), 'wide MLP\nlr 1e-3 looks right');
  await shot(page, 'job-annotated');
  const { body: stored } = await api(`/api/jobs/${formJob}`);
  assert.deepEqual(stored.tags, ['e2e', 'wide', 'baseline']);
  // The compare table lists tags too.
  await page.goto(`${base}/compare?ids=${formJob}`);
  await page.locator('table.compare tr.tags-row a.tag', { hasText: 'baseline' }).waitFor();
  await page.goto(`${base}/jobs/${formJob}`);
  // The tag links to the list filtered by it; the list shows it on the row.
  await tag.click();
  await page.waitForURL(/\/\?tag=baseline$/);
  await page.locator(`tbody tr[data-job-id="${formJob}"] a.tag`, { hasText: 'baseline' }).waitFor();
  assert.equal(await page.locator('tbody tr').count(), 1);
  assert.match(await page.locator('.chip.tag-filter').innerText(), /baseline/);
  // Removing it: gone from the page and from the filtered list, live.
  await page.goto(`${base}/jobs/${formJob}`);
  await page.getByRole('button', { name: 'remove tag baseline' }).click();
  await tag.waitFor({ state: 'detached' });
  await page.goto(`${base}/?tag=baseline`);
  await page.locator('p.empty').waitFor();
  await page.close();
});

test('datasets: a CSV uploaded from the browser is hashed, previewed, picked in the form, and named by the job that trained on it', async () => {
  // `kiln up` stores the committed data (for the playground); uploads come on top of it.
  const committed = (await api('/api/datasets')).body.map((d) => d.name).sort();
  assert.deepEqual(committed, ['kiln-stories', 'mnist-subset']);
  // Two features, two classes: trains in a few seconds.
  const lines = ['x,y,label'];
  for (let i = 0; i < 240; i++) {
    const c = i % 2;
    lines.push(`${(c * 3 + (i % 7) * 0.1).toFixed(2)},${(c * -2 + (i % 5) * 0.1).toFixed(2)},${c ? 'b' : 'a'}`);
  }
  const csv = Buffer.from(lines.join('\n') + '\n');
  const digest = createHash('sha256').update(csv).digest('hex');
  const name = 'e2e-points';
  const page = await ctx.newPage();
  await page.goto(`${base}/datasets`);
  await page.locator('tr[data-dataset="mnist-subset"]').waitFor();
  assert.equal(await page.locator(`tr[data-dataset="${name}"]`).count(), 0);
  const submitUpload = () => page.click('form.upload button[type=submit]');
  const status = page.locator('.upload-status');

  // The name comes from the file (characters outside the rule become '-'), the kind from `.csv`.
  await page.setInputFiles('#upload-file', { name: 'e2e points.csv', mimeType: 'text/csv', buffer: csv });
  assert.equal(await page.inputValue('#upload-name'), 'e2e-points.csv');
  assert.equal(await page.inputValue('#upload-kind'), 'csv');
  // A bad name is named at its input and nothing is sent.
  await page.fill('#upload-name', 'has space');
  await submitUpload();
  assert.match(await page.locator('#upload-name-error').innerText(), /`has space`/);
  assert.equal(await page.locator('#upload-name').getAttribute('aria-invalid'), 'true');
  assert.equal((await api('/api/datasets')).body.length, committed.length);

  await page.fill('#upload-name', name);
  await submitUpload();
  await status.and(page.locator('[data-stage="done"]')).waitFor();
  assert.equal(await status.locator('progress').getAttribute('value'), '100');
  assert.match(await status.innerText(), new RegExp(`\`${name}\` version 1 \\(sha256:${digest}\\): uploaded`));
  // The row appears with the digest the browser computed, which is the file's.
  const row = page.locator(`tr[data-dataset="${name}"]`);
  await row.waitFor();
  assert.equal(await row.getAttribute('data-digest'), digest);
  const cells = await row.locator('td').allInnerTexts();
  assert.deepEqual(cells.slice(0, 3), [name, 'csv', `${(csv.length / 1000).toFixed(1)} kB`]);
  assert.equal(cells[4], `sha256:${digest.slice(0, 12)}`);
  assert.equal((await api(`/api/datasets/${name}`)).body.digest, digest);
  await shot(page, 'datasets');

  // The same bytes again: stored already, said so.
  await submitUpload();
  await status.and(page.locator('[data-stage="done"]')).filter({ hasText: 'already stored' }).waitFor();
  // Bytes the coordinator refuses: its message is shown.
  await page.setInputFiles('#upload-file', { name: 'empty.csv', mimeType: 'text/csv', buffer: Buffer.alloc(0) });
  await submitUpload();
  await status.and(page.locator('[data-stage="failed"]')).waitFor();
  assert.match(await status.innerText(), /Upload failed: .*the file is empty/);
  assert.equal((await api('/api/datasets')).body.length, committed.length + 1);

  // The preview: columns and first rows, the full digest and the references to copy.
  await row.click();
  await page.waitForURL(new RegExp(`/datasets/${name}$`));
  const preview = page.locator('table.preview[data-preview="csv"]');
  await preview.waitFor();
  assert.deepEqual(await preview.locator('th').allInnerTexts(), ['x', 'y', 'label']);
  assert.deepEqual(await preview.locator('tbody tr').first().locator('td').allInnerTexts(), lines[1].split(','));
  assert.equal(await page.locator('code.digest').innerText(), `sha256:${digest}`);
  assert.equal(await page.inputValue('#ref-named'), `kiln:${name}`);
  assert.equal(await page.inputValue('#ref-pinned'), `kiln:sha256:${digest}`);
  await shot(page, 'dataset');

  // New job: the picker sets the kind and the path (still editable), the job trains on it.
  await page.goto(`${base}/new`);
  await page.locator(`#f-dataset-stored option[value="${name}"]`).waitFor({ state: 'attached' });
  assert.equal(await page.inputValue('#f-dataset-kind'), 'synthetic');
  await page.selectOption('#f-dataset-stored', name);
  assert.equal(await page.inputValue('#f-dataset-kind'), 'csv');
  assert.equal(await page.inputValue('#f-dataset-path'), `kiln:${name}`);
  assert.match(await page.locator('[data-field="dataset.stored"] .help').innerText(), /columns: x, y, label/);
  await page.fill('#f-name', 'e2e-dataset');
  await page.fill('#f-dataset-label_column', 'label');
  await shot(page, 'new-job-dataset');
  await page.click('button[type=submit]');
  await page.waitForURL(/\/jobs\/\d+$/);
  const id = Number(page.url().match(/\/jobs\/(\d+)$/)[1]);
  assert.equal((await api(`/api/jobs/${id}`)).body.spec.dataset.path, `kiln:sha256:${digest}`, 'pinned at submit');
  const shown = page.locator('dd.dataset a');
  await shown.waitFor();
  assert.equal(await shown.innerText(), `kiln:${name} · sha256:${digest.slice(0, 12)}`);
  assert.equal(await shown.getAttribute('title'), `kiln:sha256:${digest}`);
  const done = await waitForState(id, ['succeeded', 'failed', 'cancelled']);
  assert.equal(done.state, 'succeeded', done.error ?? '');
  await shot(page, 'job-dataset');
  // The link opens exactly that version.
  await shown.click();
  await page.waitForURL(new RegExp(`/datasets/sha256:${digest}$`));
  await preview.waitFor();
  assert.equal(await page.locator('section.dataset h1').innerText(), name);
  assert.equal(await page.locator('table.versions tr.current td').first().innerText(), '1');

  // A job on a worker path says so (this one fails there: no such file).
  const local = await submit({
    name: 'e2e-dataset-local', device: 'cpu', model: { kind: 'mlp', hidden: [8] },
    dataset: { kind: 'csv', path: 'no/such/points.csv', label_column: 'label' },
    optimizer: { kind: 'adam', lr: 0.001 }, training: { batch_size: 8, epochs: 1 },
  });
  await page.goto(`${base}/jobs/${local}`);
  await page.locator('dd.dataset', { hasText: '(on the worker)' }).waitFor();
  assert.equal(await page.locator('dd.dataset').innerText(), 'no/such/points.csv (on the worker)');
  assert.equal(await page.locator('dd.dataset a').count(), 0);
  await waitForState(local, ['failed', 'succeeded', 'cancelled']);

  // Delete: refused while a queued or running job uses it (the coordinator's message, naming
  // the job), done once it is not.
  const busy = await submit({
    name: 'e2e-dataset-busy', device: 'cpu', model: { kind: 'mlp', hidden: [8] },
    dataset: { kind: 'csv', path: `kiln:${name}`, label_column: 'label' },
    optimizer: { kind: 'adam', lr: 0.001 }, training: { batch_size: 8, epochs: 100000, log_every: 50 },
  });
  try {
    await page.goto(`${base}/datasets/${name}`);
    await preview.waitFor();
    page.once('dialog', (d) => d.accept());
    await page.getByRole('button', { name: 'Delete' }).click();
    const refused = page.locator('section.dataset .error[role=alert]');
    await refused.waitFor();
    assert.match(await refused.innerText(), new RegExp(`Delete failed: dataset \`${name}\` is in use by job\\(s\\) ${busy} \\((queued|running)\\)`));
    assert.equal((await api(`/api/datasets/${name}`)).status, 200);
    await shot(page, 'dataset-in-use');
  } finally {
    await api(`/api/jobs/${busy}/cancel`, { method: 'POST' });
  }
  await waitForState(busy, ['cancelled']);
  page.once('dialog', (d) => d.accept());
  await page.getByRole('button', { name: 'Delete' }).click();
  await page.waitForURL(new RegExp('/datasets$'));
  await page.locator('tr[data-dataset="mnist-subset"]').waitFor();
  assert.equal(await page.locator(`tr[data-dataset="${name}"]`).count(), 0);
  assert.equal((await api(`/api/datasets/${name}`)).status, 404);
  await page.close();
});

test('pages reload to the same view (deep links), workers and sweep render, phones fit', async () => {
  const page = await ctx.newPage();
  await page.goto(`${base}/jobs/${formJob}?from=20&to=100`);
  await page.locator('.chart-loss canvas:not([data-points="0"])').waitFor();
  assert.equal(await page.inputValue('#zoom-from'), '20');
  assert.equal(await page.inputValue('#zoom-to'), '100');
  // The zoomed view is drawn from a re-fetch of the range: its last step is at most 100.
  await page.locator('.chart-loss canvas[data-last-step]:not([data-last-step="0"])').waitFor();
  assert.ok(Number(await page.locator('.chart-loss canvas').getAttribute('data-last-step')) <= 100);

  // Hover shows values; a drag zooms and lands in the URL; double-click resets.
  await page.goto(`${base}/jobs/${formJob}`);
  const canvas = page.locator('.chart-loss canvas');
  await page.locator('.chart-loss canvas:not([data-points="0"])').waitFor();
  const box = await canvas.boundingBox();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.5);
  assert.match(await page.locator('.chart-loss .tooltip').innerText(), /train \d/);
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.5);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height * 0.5, { steps: 5 });
  await page.mouse.up();
  await page.waitForURL(/\?from=\d+&to=\d+$/);
  const [, from, to] = page.url().match(/from=(\d+)&to=(\d+)/).map(Number);
  assert.ok(from > 0 && to > from, page.url());
  await canvas.dblclick();
  await page.waitForURL(new RegExp(`/jobs/${formJob}$`));
  // Smoothing: the slider lands in the URL, the learning rate stays raw, hovering shows the
  // smoothed and the raw value, and a reload keeps it.
  await page.locator('#smoothing').evaluate((el) => {
    el.value = '0.9';
    el.dispatchEvent(new Event('input', { bubbles: true }));
  });
  await page.waitForURL(new RegExp(`/jobs/${formJob}\\?smooth=0\\.9$`));
  await page.locator('.chart-loss canvas[data-smoothing="0.9"]').waitFor();
  assert.equal(await page.locator('.chart-lr canvas').getAttribute('data-smoothing'), '0');
  await page.mouse.move(box.x + box.width * 0.45, box.y + box.height * 0.5);
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.5);
  const tip = await page.locator('.chart-loss .tooltip').innerText();
  const [, smoothed, raw] = tip.match(/train (\S+) \(raw (\S+)\)/) ?? [];
  assert.ok(smoothed && raw && smoothed !== raw, tip);
  // A log-scale loss axis: in the URL too, and on the loss chart only.
  await page.check('#log-loss');
  await page.waitForURL(new RegExp(`/jobs/${formJob}\\?smooth=0\\.9&log=loss$`));
  await page.locator('.chart-loss canvas[data-log-y="true"]').waitFor();
  assert.equal(await page.locator('.chart-accuracy canvas').getAttribute('data-log-y'), 'false');
  await page.reload();
  await page.locator('.chart-loss canvas[data-smoothing="0.9"][data-log-y="true"]').waitFor();
  assert.equal(await page.inputValue('#smoothing'), '0.9');
  assert.ok(await page.isChecked('#log-loss'));
  await shot(page, 'job-smoothed');
  // "New job like this" fills the form from the run.
  await page.goto(`${base}/new?from=${formJob}`);
  await page.waitForFunction(() => document.querySelector('#f-name')?.value === 'e2e-form');
  assert.equal(await page.inputValue('#f-model-hidden'), '1024, 1024');
  assert.equal(await page.inputValue('#f-dataset-kind'), 'idx');
  await page.goto(`${base}/?state=cancelled`);
  await page.locator('tbody tr').first().waitFor();
  const states = await page.locator('tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.state));
  assert.deepEqual([...new Set(states)], ['cancelled']);
  assert.equal(await page.inputValue('#filter-state'), 'cancelled');

  await page.goto(`${base}/workers`);
  await page.locator('table.workers .badge.online').waitFor();
  await shot(page, 'workers');
  await page.goto(`${base}/sweep`);
  await page.locator('ul.plan li').nth(3).waitFor();
  await shot(page, 'sweep');
  // A bad grid line is named and blocks the submit; a good grid makes one grouped job each.
  await page.fill('#sweep-grid', 'optimizer.nope=1,2');
  assert.match(await page.locator('.sweep .field-error').innerText(), /optimizer\.nope/);
  assert.ok(await page.getByRole('button', { name: /Submit 0 jobs/ }).isDisabled());
  await page.fill('#sweep-grid', 'optimizer.lr=0.001,0.003\ntraining.batch_size=32,64');
  await page.getByRole('button', { name: 'Submit 4 jobs' }).click();
  await page.waitForURL(/\/\?group=/);
  await page.locator('tbody tr').nth(3).waitFor();
  assert.equal(await page.locator('tbody tr').count(), 4);
  const names = await page.locator('tbody tr').allInnerTexts();
  assert.ok(names.some((n) => n.includes('blobs-mlp-lr0.003-batch_size64')), names.join('\n'));
  await page.goto(`${base}/no/such/page`);
  assert.match(await page.locator('h1').innerText(), /Page not found/);

  // Every control has an accessible name.
  for (const path of ['/', `/jobs/${formJob}`, '/new', '/sweep', '/compare', '/workers', '/datasets']) {
    await page.goto(base + path);
    await page.waitForTimeout(300);
    const unnamed = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea, button')]
      .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.textContent.trim()))
      .map((el) => el.outerHTML.slice(0, 80)));
    assert.deepEqual(unnamed, [], `${path}: controls without a label`);
  }
  await page.close();

  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await phone.addInitScript(signIn, TOKEN);
  const p = await phone.newPage();
  await p.goto(`${base}/jobs/${formJob}`);
  await p.locator('.chart-loss canvas:not([data-points="0"])').waitFor();
  // A tap on a chart shows the values there (scrolled to it first, as a thumb would: the
  // run's tags and notes push it below the fold).
  await p.locator('.chart-loss canvas').scrollIntoViewIfNeeded();
  const tapBox = await p.locator('.chart-loss canvas').boundingBox();
  await p.touchscreen.tap(tapBox.x + tapBox.width / 2, tapBox.y + tapBox.height / 2);
  assert.match(await p.locator('.chart-loss .tooltip').innerText(), /train \d/);
  const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `page is ${overflow}px wider than a phone`);
  await shot(p, 'job-phone');
  await phone.close();
});

test('without a token only the login form shows; a wrong token is refused, the right one works', async () => {
  const fresh = await browser.newContext();
  const page = await fresh.newPage();
  await page.goto(`${base}/workers`);
  await page.locator('#token').waitFor();
  assert.equal(await page.locator('table.workers').count(), 0);
  await page.fill('#token', 'kiln_wrong');
  await page.click('button[type=submit]');
  await page.locator('.login .error').waitFor();
  await shot(page, 'login');
  await page.fill('#token', TOKEN);
  await page.click('button[type=submit]');
  await page.locator('table.workers').waitFor();
  assert.match(page.url(), /\/workers$/);
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.locator('#token').waitFor();
  assert.equal(await page.evaluate(() => localStorage.getItem('kiln.token')), null);
  await fresh.close();
});

test('a data-parallel job: two workers train it, the job page names both ranks, the global batch and the transport', async () => {
  // Submitted first, it waits for a gang of 2; the list, open meanwhile, fetched the worker
  // names before the second worker joined and must learn its name live.
  const id = await submit({ ...blobs('e2e-ddp', { epochs: 3 }), distributed: { workers: 2 } });
  const list = await ctx.newPage();
  await list.goto(`${base}/`);
  await list.locator(`tr[data-job-id="${id}"]`).waitFor();
  // A second worker beside `kiln up`'s own; the gang of 2 needs both.
  const second = spawn(BIN, ['worker', '--server', base, '--token', TOKEN, '--device', 'cpu',
    '--id', 'e2e-second', '--name', 'second', '--cache-dir', join(dataDir, 'cache-second')], {
    env: { ...process.env, BURN_DEVICE: 'flex', RUST_LOG: 'warn' }, stdio: 'ignore',
  });
  try {
    const end = Date.now() + 60_000;
    while ((await api('/api/workers')).body.filter((w) => w.connected).length < 2) {
      assert.ok(Date.now() < end, 'the second worker did not connect');
      await new Promise((r) => setTimeout(r, 100));
    }
    const job = await waitForState(id, ['succeeded', 'failed', 'cancelled']);
    assert.equal(job.state, 'succeeded', JSON.stringify(job));
    const attempts = (await api(`/api/jobs/${id}/attempts`)).body;
    assert.equal(attempts.at(-1).ranks.length, 2, JSON.stringify(attempts));
    // The list names the job's worker (rank 0, either of the two), never by its id.
    const named = (await api('/api/workers')).body.find((w) => w.id === job.worker_id);
    assert.ok(named, `${job.worker_id} in /api/workers`);
    const row = list.locator(`tr[data-job-id="${id}"][data-state="succeeded"]`);
    await row.waitFor();
    const cell = await row.locator('td.wide').innerText();
    assert.equal(cell.trim(), named.name, `the list's worker cell for ${job.worker_id}`);
    await list.close();

    const page = await ctx.newPage();
    await page.goto(`${base}/jobs/${id}`);
    const ranks = page.locator('dd.ranks');
    await ranks.waitFor();
    const text = await ranks.innerText();
    assert.match(text, /\(rank 0\)/);
    assert.match(text, /\(rank 1\)/);
    assert.match(text, /second/);
    assert.match(await page.locator('dd.parallel').innerText(), /batch 32 per rank = 64 global/);
    assert.match(await page.locator('dd.transport').innerText(), /direct TCP/);
    assert.match(await page.locator('dd.rank-rates').innerText(), /rank 0 \d+, rank 1 \d+/);
    // The attempts table names both workers too.
    assert.match(await page.locator('table.attempts tbody tr').last().innerText(), /rank 1/);
    await shot(page, 'job-data-parallel');
    await page.close();
  } finally {
    second.kill('SIGTERM');
  }
});

test('a coordinator restart: the open jobs page reconnects and shows new jobs live', async () => {
  const page = await ctx.newPage();
  await page.goto(`${base}/`);
  await page.locator('tbody tr').first().waitFor();
  const port = new URL(base).port;
  kiln.kill('SIGKILL');
  await new Promise((r) => kiln.once('exit', r));
  ({ child: kiln } = await startKiln(dataDir, [], `127.0.0.1:${port}`));
  const id = await submit(blobs('e2e-after-restart'));
  // No reload: the page's /ws/events reconnects (with backoff) and the job arrives live.
  await page.locator(`tr[data-job-id="${id}"]`).waitFor({ timeout: 30_000 });
  await waitForState(id, ['succeeded']);
  await page.locator(`tr[data-job-id="${id}"][data-state="succeeded"]`).waitFor();
  await page.close();
});

test('no page threw an error (a panic in the app shows up here)', () => {
  assert.deepEqual(pageErrors, []);
});
