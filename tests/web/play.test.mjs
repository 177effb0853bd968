// End-to-end tests of the playground (/play): a real `kiln up` serving the dashboard and the
// trainer module, real headless Chromium; training runs in the tab (a Web Worker with the
// kiln-trainer wasm module) on the CPU backend and on WebGPU (Chromium's SwiftShader adapter
// with --enable-unsafe-webgpu: correctness-grade, slow).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SHOTS, TOKEN, endSession, startSession } from './support.mjs';

let session, base, dataDir, ctx, pageErrors;

before(async () => {
  session = await startSession('play', { webgpu: true });
  ({ base, dataDir, ctx, errors: pageErrors } = session);
  // Long tasks on the page's main thread, by wall clock (printed by the CPU test).
  await ctx.addInitScript(() => {
    window.__longTasks = [];
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__longTasks.push({ start: e.startTime, ms: e.duration });
    }).observe({ type: 'longtask', buffered: true });
  });
});

after(() => endSession(session));

const status = (page) => page.locator('.play-status');

/** The training losses the page has charted, in step order. */
async function trainLosses(page) {
  const text = await page.locator('section.play').getAttribute('data-train-losses');
  return text ? text.split(',').map(Number) : [];
}

const api = async (path) => {
  const res = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } });
  const text = await res.text();
  assert.ok(res.ok, `${path}: ${res.status} ${text}`);
  return JSON.parse(text);
};

/** Poll a job until it ends; fail if it ends other than `succeeded`. */
async function waitForJob(id, ms) {
  for (const end = Date.now() + ms; ;) {
    const job = await api(`/api/jobs/${id}`);
    if (job.state === 'succeeded') return job;
    assert.ok(!['failed', 'cancelled'].includes(job.state) && Date.now() < end, JSON.stringify(job));
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * The main-thread tasks of the page's renderer from a Chromium trace (`toplevel` category):
 * each with its wall time and its thread (CPU) time, in ms. Thread time is what the page did;
 * wall time also counts the time the OS ran other threads instead, which on a 2-core machine
 * with the trainer's Web Worker busy is most of it (a 59 ms long task measured 12 ms of CPU).
 */
function mainThreadTasks(trace) {
  const events = JSON.parse(trace.toString()).traceEvents;
  const main = new Set(events
    .filter((e) => e.name === 'thread_name' && e.args?.name === 'CrRendererMain')
    .map((e) => `${e.pid}:${e.tid}`));
  return events
    .filter((e) => e.ph === 'X' && e.name === 'ThreadControllerImpl::RunTask' && main.has(`${e.pid}:${e.tid}`))
    // A task of a microsecond or so comes without thread time: its wall time bounds it.
    .map((e) => ({ wall: e.dur / 1000, cpu: (e.tdur ?? e.dur) / 1000 }));
}

async function waitForState(page, states, ms) {
  await page.waitForFunction(
    (s) => s.includes(document.querySelector('.play-status')?.dataset.state),
    states, { timeout: ms });
  return status(page).getAttribute('data-state');
}

test('the playground trains the MNIST MLP on the CPU in the tab: the loss falls and the page never blocks', async () => {
  const page = await ctx.newPage();
  await page.goto(`${base}/play?preset=mnist-mlp`);
  await page.selectOption('#play-device', 'cpu');
  // Three epochs of the committed 2,000 images, logged every 5 steps.
  await page.fill('#f-training-epochs', '3');
  await page.fill('#f-training-log_every', '5');
  const mark = await page.evaluate(() => performance.now());
  await session.browser.startTracing(page, { categories: ['toplevel'] });
  await page.click('button[type=submit]');
  const state = await waitForState(page, ['done', 'failed'], 120_000);
  const tasks = mainThreadTasks(await session.browser.stopTracing());
  assert.equal(state, 'done', await status(page).textContent());
  await assert.doesNotReject(page.locator('.play-device', { hasText: 'cpu' }).waitFor());
  const losses = await trainLosses(page);
  assert.ok(losses.length >= 10, `train points: ${losses.length}`);
  const head = losses.slice(0, 3).reduce((a, b) => a + b) / 3;
  const tail = losses.slice(-3).reduce((a, b) => a + b) / 3;
  assert.ok(tail < head * 0.6, `loss should fall: first ${head}, last ${tail}`);
  // A test accuracy is shown at the end (the subset's t10k files).
  await assert.doesNotReject(page.locator('.final-accuracy', { hasText: 'test' }).waitFor());
  // The page never blocks: from the click to the end, the first chart updates included, no
  // main-thread task does 50 ms of work (the Long Tasks API's threshold, on thread time).
  // Wall-clock long tasks are printed, not asserted: they also count preemption, and on a
  // 2-core machine the trainer's worker, Chromium and the test share the cores.
  const first = Number(await page.locator('section.play').getAttribute('data-first-metric-ms'));
  const long = await page.evaluate((m) => window.__longTasks.filter((t) => t.start >= m), mark);
  assert.ok(tasks.length > 100, `the trace should hold the page's main-thread tasks: ${tasks.length}`);
  const busiest = tasks.reduce((a, t) => (t.cpu > a.cpu ? t : a));
  console.log(`# playground CPU: ${losses.length} points, loss ${head.toFixed(3)} → ${tail.toFixed(3)}; first metrics ${(first - mark).toFixed(0)} ms after the click; ${tasks.length} main-thread tasks, the busiest ${busiest.cpu.toFixed(1)} ms of CPU (${busiest.wall.toFixed(1)} ms wall); wall-clock long tasks: ${JSON.stringify(long.map((t) => Math.round(t.ms)))} ms`);
  assert.ok(busiest.cpu < 50, `a main-thread task did ${busiest.cpu} ms of work (${busiest.wall} ms wall)`);
  await page.screenshot({ path: join(SHOTS, 'playground.png'), fullPage: true });
  // Save as a run: a job like any other, with the tab's curve, spec and model.
  await page.click('#play-save');
  const saved = page.locator('.play-saved');
  await saved.waitFor({ timeout: 30_000 });
  const id = Number(await saved.getAttribute('data-job'));
  const job = await api(`/api/jobs/${id}`);
  assert.equal(job.state, 'succeeded');
  assert.equal(job.step, Number(await status(page).getAttribute('data-step')));
  assert.deepEqual(job.tags, ['playground']);
  assert.match(job.spec.dataset.path, /^kiln:sha256:[0-9a-f]{64}$/, 'its data pinned');
  const stored = (await api(`/api/jobs/${id}/metrics?split=train`)).map((p) => p.loss);
  assert.deepEqual(stored, losses, 'the stored curve is the tab\'s');
  const files = (await api(`/api/jobs/${id}/artifacts`)).map((a) => a.name);
  for (const f of ['model.bpk', 'model.json', 'summary.json']) assert.ok(files.includes(f), `${f} in ${files}`);
  const attempts = await api(`/api/jobs/${id}/attempts`);
  assert.match(attempts[0].worker_id, /^browser tab \(cpu\)$/);
  // It is listed, and its page offers what any run's does: Try it runs the saved model.
  await page.goto(`${base}/`);
  await page.locator(`a[href="/jobs/${id}"]`).first().waitFor({ timeout: 10_000 });
  await page.goto(`${base}/jobs/${id}`);
  await page.locator('#try-it').waitFor({ timeout: 30_000 });
  assert.deepEqual(pageErrors, []);
  await page.close();
});

test('a playground run stops between steps and resumes at the step it stopped, without a loss spike', async () => {
  const page = await ctx.newPage();
  await page.goto(`${base}/play?preset=mnist-mlp`);
  await page.selectOption('#play-device', 'cpu');
  await page.fill('#f-training-epochs', '40');
  await page.fill('#f-training-log_every', '5');
  await page.click('button[type=submit]');
  await page.waitForFunction(() => Number(document.querySelector('.play-status')?.dataset.step) >= 100, null, { timeout: 120_000 });
  await page.click('#play-stop');
  assert.equal(await waitForState(page, ['stopped', 'failed'], 30_000), 'stopped', await status(page).textContent());
  const stoppedAt = Number(await status(page).getAttribute('data-step'));
  const before = await trainLosses(page);
  await page.click('#play-resume');
  await page.waitForFunction((s) => Number(document.querySelector('.play-status')?.dataset.step) >= s + 50, stoppedAt, { timeout: 120_000 });
  // The resumed run started where the stopped one ended.
  assert.equal(Number(await status(page).getAttribute('data-start-step')), stoppedAt);
  await page.click('#play-stop');
  await waitForState(page, ['stopped'], 30_000);
  const after = await trainLosses(page);
  // The chart continues: the points before the stop are kept, the new ones come after them.
  assert.ok(after.length > before.length, `points ${before.length} → ${after.length}`);
  const lastBefore = before.slice(-3).reduce((a, b) => a + b) / 3;
  const firstAfter = after.slice(before.length, before.length + 3).reduce((a, b) => a + b) / 3;
  console.log(`# resume: stopped at step ${stoppedAt}; loss before ${lastBefore.toFixed(3)}, after ${firstAfter.toFixed(3)}`);
  // A fresh model would start near ln(10) ≈ 2.3: a resumed one goes on near where it was.
  assert.ok(firstAfter < lastBefore * 2 + 0.05, `loss jumped on resume: ${lastBefore} → ${firstAfter}`);
  assert.deepEqual(pageErrors, []);
  await page.close();
});

test('a run stopped in the tab continues on a worker from its checkpoint, at its step, without a loss spike', async () => {
  const page = await ctx.newPage();
  await page.goto(`${base}/play?preset=mnist-mlp`);
  await page.selectOption('#play-device', 'cpu');
  await page.fill('#f-training-epochs', '6');
  await page.fill('#f-training-log_every', '5');
  await page.click('button[type=submit]');
  await page.waitForFunction(() => Number(document.querySelector('.play-status')?.dataset.step) >= 40, null, { timeout: 120_000 });
  await page.click('#play-stop');
  assert.equal(await waitForState(page, ['stopped', 'failed'], 30_000), 'stopped', await status(page).textContent());
  const stoppedAt = Number(await status(page).getAttribute('data-step'));
  const before = await trainLosses(page);
  await page.click('#play-continue-worker');
  // The page goes to the new job, which the `kiln up` worker takes.
  await page.waitForURL(/\/jobs\/\d+$/, { timeout: 30_000 });
  const id = Number(page.url().split('/').pop());
  const job = await waitForJob(id, 180_000);
  const attempts = await api(`/api/jobs/${id}/attempts`);
  assert.equal(attempts.length, 2, JSON.stringify(attempts));
  assert.equal(attempts[0].worker_id, 'browser tab (cpu)');
  assert.equal(attempts[1].resumed_from_step, stoppedAt, 'the worker resumed at the tab\'s step');
  assert.equal(job.step, job.total_steps);
  assert.ok(job.step > stoppedAt);
  const points = (await api(`/api/jobs/${id}/metrics?split=train`));
  const tab = points.filter((p) => p.attempt === 1).map((p) => p.loss);
  const worker = points.filter((p) => p.attempt === 2);
  assert.deepEqual(tab, before, 'the tab\'s curve is the job\'s first attempt');
  assert.ok(worker.length > 0 && worker[0].step > stoppedAt, JSON.stringify(worker[0]));
  const lastTab = before.slice(-2).reduce((a, b) => a + b) / 2;
  const firstWorker = worker.slice(0, 2).reduce((a, p) => a + p.loss, 0) / Math.min(2, worker.length);
  console.log(`# tab → worker: stopped at step ${stoppedAt}, loss ${lastTab.toFixed(3)}; on the worker ${firstWorker.toFixed(3)} → ${worker.at(-1).loss.toFixed(3)} at step ${job.step}`);
  assert.ok(firstWorker < lastTab * 1.5 + 0.05, `loss jumped: ${lastTab} → ${firstWorker}`);
  // The job page shows both attempts, the tab's first.
  await page.locator('text=browser tab (cpu)').first().waitFor({ timeout: 10_000 });
  assert.deepEqual(pageErrors, []);
  await page.close();
});

test('a worker-trained job continues in the browser from its newest checkpoint, at its step, without a loss spike', async () => {
  const res = await fetch(`${base}/api/jobs`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ spec: {
      name: 'hand-off', device: 'cpu', seed: 4,
      model: { kind: 'mlp', hidden: [32] },
      dataset: { kind: 'idx', path: 'kiln:mnist-subset', validation_fraction: 0 },
      optimizer: { kind: 'adam', lr: 0.002 },
      training: { batch_size: 64, epochs: 1, log_every: 4, checkpoint_every: 10 },
    } }),
  });
  const job = await res.json();
  let worker;
  for (const end = Date.now() + 120_000; ;) {
    worker = await (await fetch(`${base}/api/jobs/${job.id}`, { headers: { authorization: `Bearer ${TOKEN}` } })).json();
    if (worker.state === 'succeeded') break;
    assert.ok(!['failed', 'cancelled'].includes(worker.state) && Date.now() < end, JSON.stringify(worker));
    await new Promise((r) => setTimeout(r, 250));
  }
  const page = await ctx.newPage();
  await page.goto(`${base}/jobs/${job.id}`);
  await page.click('#continue-in-browser');
  await page.locator('#play-continue').waitFor();
  const before = await trainLosses(page);
  assert.ok(before.length >= 5, `the job's own curve is shown first: ${before.length} points`);
  // The checkpoint of another model (the form changed to a wider layer): a clear message.
  await page.fill('#f-model-hidden', '64');
  await page.click('#play-continue');
  assert.equal(await waitForState(page, ['done', 'failed'], 60_000), 'failed');
  assert.match(await status(page).textContent(), /cannot resume: the checkpoint's model configuration differs/);
  await page.fill('#f-model-hidden', '32');
  await page.fill('#f-training-epochs', '3');
  await page.click('#play-continue');
  assert.equal(await waitForState(page, ['done', 'failed'], 120_000), 'done', await status(page).textContent());
  assert.equal(Number(await status(page).getAttribute('data-start-step')), worker.step, 'continues at the worker\'s last step');
  assert.equal(Number(await status(page).getAttribute('data-step')), worker.step * 3);
  const after = await trainLosses(page);
  const lastWorker = before.slice(-2).reduce((a, b) => a + b) / 2;
  const firstHere = after.slice(before.length, before.length + 2).reduce((a, b) => a + b) / 2;
  console.log(`# hand-off: job ${job.id} stopped at step ${worker.step}, loss ${lastWorker.toFixed(3)}; in the browser ${firstHere.toFixed(3)} → ${after.at(-1).toFixed(3)}`);
  assert.ok(firstHere < lastWorker * 1.5 + 0.05, `loss jumped: ${lastWorker} → ${firstHere}`);
  assert.deepEqual(pageErrors, []);
  await page.close();
});

test('a share link re-runs in a fresh browser without a token, writes nothing to the owner, and overlays the curves', async () => {
  const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
  const res = await fetch(`${base}/api/jobs`, {
    method: 'POST', headers,
    body: JSON.stringify({ spec: {
      name: 'shared-and-re-run', device: 'cpu', seed: 9,
      model: { kind: 'mlp', hidden: [32] },
      dataset: { kind: 'idx', path: 'kiln:mnist-subset', validation_fraction: 0.1 },
      optimizer: { kind: 'adam', lr: 0.002 },
      training: { batch_size: 64, epochs: 1, log_every: 4 },
    } }),
  });
  const job = await res.json();
  for (const end = Date.now() + 120_000; ;) {
    const j = await (await fetch(`${base}/api/jobs/${job.id}`, { headers })).json();
    if (j.state === 'succeeded') break;
    assert.ok(!['failed', 'cancelled'].includes(j.state) && Date.now() < end, JSON.stringify(j));
    await new Promise((r) => setTimeout(r, 250));
  }
  // The owner chose to share the data with the link; a link without it cannot re-run.
  const share = await (await fetch(`${base}/api/jobs/${job.id}/shares`, {
    method: 'POST', headers, body: JSON.stringify({ with_data: true }) })).json();
  assert.equal(share.share.with_data, true);
  const privateLink = await (await fetch(`${base}/api/jobs/${job.id}/shares`, { method: 'POST', headers })).json();
  assert.equal(privateLink.share.with_data, false);
  const jobsBefore = (await (await fetch(`${base}/api/jobs`, { headers })).json()).total;
  // A stranger: a fresh context, no token anywhere.
  const stranger = await session.browser.newContext();
  const writes = [];
  stranger.on('request', (r) => { if (r.method() !== 'GET') writes.push(`${r.method()} ${r.url()}`); });
  const page = await stranger.newPage();
  await page.goto(`${base}${privateLink.path}`);
  await page.locator('.rerun-note', { hasText: 'without its training data' }).waitFor({ timeout: 10_000 });
  assert.equal(await page.locator('#rerun').isDisabled(), true);
  assert.equal((await fetch(`${base}/api/share/${privateLink.token}/dataset`)).status, 403);
  await page.goto(`${base}${share.path}`);
  await page.click('#rerun');
  await page.waitForFunction(() => ['done', 'failed'].includes(document.querySelector('section.rerun')?.dataset.rerunState), null, { timeout: 120_000 });
  const section = page.locator('section.rerun');
  assert.equal(await section.getAttribute('data-rerun-state'), 'done', await page.locator('.rerun-note').innerText());
  const losses = (await section.getAttribute('data-rerun-losses')).split(',').map(Number);
  assert.equal(losses.length, 8, `${losses}`);
  assert.ok(losses.at(-1) < losses[0], `loss falls: ${losses}`);
  // One chart with both lines: the shared run's and the re-run's.
  const lines = await page.locator('section.rerun .chart-loss canvas').getAttribute('data-series');
  assert.equal(lines, '2');
  assert.deepEqual(writes, [], 'the re-run wrote nothing to the coordinator');
  assert.equal((await (await fetch(`${base}/api/jobs`, { headers })).json()).total, jobsBefore);
  await page.screenshot({ path: join(SHOTS, 'share-rerun.png'), fullPage: true });
  await stranger.close();
  assert.deepEqual(pageErrors, []);
});

test('the playground trains on WebGPU when the browser has an adapter, says so, and resumes a stopped run', async () => {
  const page = await ctx.newPage();
  await page.goto(`${base}/play?preset=mnist-mlp`);
  await page.selectOption('#play-device', 'webgpu');
  // SwiftShader is ≈ 100× slower than a GPU: a few steps, logged every step.
  await page.fill('#f-training-batch_size', '32');
  await page.fill('#f-training-max_steps', '24');
  await page.fill('#f-training-log_every', '1');
  await page.click('button[type=submit]');
  await page.waitForFunction(() => Number(document.querySelector('.play-status')?.dataset.step) >= 8, null, { timeout: 300_000 });
  const device = await page.locator('.play-device').textContent();
  assert.match(device, /webgpu/, device);
  await page.click('#play-stop');
  assert.equal(await waitForState(page, ['stopped', 'failed'], 60_000), 'stopped', await status(page).textContent());
  const stoppedAt = Number(await status(page).getAttribute('data-step'));
  // Burn cannot read optimizer state on WebGPU: the checkpoint has the weights, and says so.
  assert.match(await status(page).textContent(), /optimizer's state starts afresh/);
  const before = await trainLosses(page);
  await page.click('#play-resume');
  assert.equal(await waitForState(page, ['done', 'failed'], 300_000), 'done', await status(page).textContent());
  assert.equal(Number(await status(page).getAttribute('data-start-step')), stoppedAt);
  const losses = await trainLosses(page);
  assert.equal(losses.length, 24);
  const head = losses.slice(0, 3).reduce((a, b) => a + b) / 3;
  const tail = losses.slice(-3).reduce((a, b) => a + b) / 3;
  const lastBefore = before.slice(-2).reduce((a, b) => a + b) / 2;
  const firstAfter = losses.slice(before.length, before.length + 2).reduce((a, b) => a + b) / 2;
  console.log(`# webgpu: stopped at step ${stoppedAt}, loss ${lastBefore.toFixed(3)}; resumed (fresh optimizer) ${firstAfter.toFixed(3)} → ${tail.toFixed(3)}`);
  assert.ok(tail < head * 0.9, `loss should fall on WebGPU: ${losses}`);
  assert.ok(firstAfter < lastBefore * 2 + 0.05, `loss jumped on resume: ${lastBefore} → ${firstAfter}`);
  assert.deepEqual(pageErrors, []);
  await page.close();
});

test('bad input in the playground gets a clear message and nothing crashes', async () => {
  const page = await ctx.newPage();
  await page.goto(`${base}/play?preset=mnist-mlp`);
  // A CSV with a non-numeric cell: the trainer names the file, the row and the column.
  const csv = join(dataDir, 'bad.csv');
  writeFileSync(csv, 'a,b,label\n1,2,0\n3,oops,1\n5,6,0\n7,8,1\n');
  await page.setInputFiles('#play-file', csv);
  await page.fill('#f-dataset-label_column', 'label');
  await page.selectOption('#play-device', 'cpu');
  await page.click('button[type=submit]');
  assert.equal(await waitForState(page, ['done', 'failed'], 60_000), 'failed');
  const text = await status(page).textContent();
  assert.match(text, /bad\.csv/, text);
  assert.match(text, /oops/, text);
  // A file too large for a tab (1 GiB) is refused before it is read: a File whose size says
  // so (allocating 1 GiB in the test browser would prove nothing more).
  await page.evaluate(() => {
    const input = document.querySelector('#play-file');
    const file = new File([new Uint8Array(1)], 'huge.csv');
    Object.defineProperty(file, 'size', { value: 2 ** 30 });
    const dt = new DataTransfer();
    dt.items.add(file);
    input.files = dt.files;
    input.dispatchEvent(new Event('change', { bubbles: true }));
  });
  await page.locator('p.error', { hasText: 'huge.csv is 1073741824 bytes' }).waitFor({ timeout: 5_000 });
  // A worker path a tab cannot read.
  await page.selectOption('#preset', 'mnist-mlp');
  await page.fill('#f-dataset-path', 'data/mnist');
  await page.click('button[type=submit]');
  await page.locator('p.error', { hasText: 'path on a worker' }).waitFor({ timeout: 5_000 });
  // A model too large for a tab: refused before anything is allocated, with its size.
  await page.selectOption('#preset', 'mnist-mlp');
  await page.fill('#f-model-hidden', '65536, 65536');
  await page.selectOption('#play-device', 'cpu');
  await page.click('button[type=submit]');
  await page.locator('.play-status[data-state="failed"]', { hasText: 'the model has' }).waitFor({ timeout: 60_000 });
  assert.match(await status(page).textContent(), /the model has 4347133962 parameters: training it takes about 64\.8 GiB .* more than a browser tab can hold/);
  // The page still trains after all that.
  await page.selectOption('#preset', 'synthetic');
  await page.click('button[type=submit]');
  await page.locator('.play-status[data-state="done"]').waitFor({ timeout: 60_000 });
  assert.deepEqual(pageErrors, []);
  await page.close();
});
