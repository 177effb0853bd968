// End-to-end test of "Try it": a model trained by a native worker runs in the page (the
// trainer's CPU module in a Web Worker) and predicts the committed test images exactly as
// `kiln predict` does natively; a drawn digit gets class probabilities.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BIN, ROOT, SHOTS, TOKEN, endSession, startSession } from './support.mjs';

const run = promisify(execFile);
let session, base, dataDir, ctx, pageErrors;
// Native (flex) and wasm (flex, one thread) run the same kernels: logits agree to float noise.
const TOLERANCE = 1e-3;

async function api(path, init = {}) {
  const res = await fetch(base + path, {
    ...init,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
  });
  return { status: res.status, bytes: Buffer.from(await res.arrayBuffer()) };
}
const json = async (path, init) => JSON.parse((await api(path, init)).bytes.toString());

before(async () => {
  session = await startSession('try');
  ({ base, dataDir, ctx, errors: pageErrors } = session);
});

after(() => endSession(session));

test('a worker-trained MNIST model predicts in the page what kiln predicts natively, and takes a drawn digit', async () => {
  const job = await json('/api/jobs', {
    method: 'POST',
    body: JSON.stringify({ spec: {
      name: 'try-it', device: 'cpu', seed: 3,
      model: { kind: 'mlp', hidden: [64] },
      dataset: { kind: 'idx', path: 'kiln:mnist-subset' },
      optimizer: { kind: 'adam', lr: 0.002 },
      training: { batch_size: 64, epochs: 3, log_every: 10 },
    } }),
  });
  const end = Date.now() + 120_000;
  for (;;) {
    const j = await json(`/api/jobs/${job.id}`);
    if (j.state === 'succeeded') break;
    assert.ok(!['failed', 'cancelled'].includes(j.state) && Date.now() < end, JSON.stringify(j));
    await new Promise((r) => setTimeout(r, 250));
  }
  // Natively: the job's own artifacts through `kiln predict`.
  const model = join(dataDir, 'model');
  mkdirSync(model);
  for (const name of ['model.json', 'model.bpk']) {
    writeFileSync(join(model, name), (await api(`/api/jobs/${job.id}/artifacts/${name}`)).bytes);
  }
  const { stdout } = await run(BIN, ['predict', model, '--idx', join(ROOT, 'data/mnist')], { maxBuffer: 64 << 20 });
  const native = stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(native.length, 500);

  const page = await ctx.newPage();
  await page.goto(`${base}/jobs/${job.id}`);
  await page.click('#try-it');
  await page.locator('canvas.draw').waitFor();
  await page.click('#try-test-set');
  const checked = page.locator('.try-checked');
  await checked.waitFor({ timeout: 60_000 });
  const section = page.locator('section.try-it');
  const classes = (await section.getAttribute('data-test-classes')).split(',').map(Number);
  const logits = (await section.getAttribute('data-test-logits')).split(',').map(Number);
  assert.equal(classes.length, 500);
  assert.equal(logits.length, 5000);
  let worst = 0;
  native.forEach((n, i) => {
    assert.equal(classes[i], n.class, `image ${i}: page ${classes[i]}, native ${n.class}`);
    n.logits.forEach((v, k) => { worst = Math.max(worst, Math.abs(v - logits[i * 10 + k])); });
  });
  console.log(`# try it: 500 of 500 classes as native, largest logit difference ${worst.toExponential(2)} (tolerance ${TOLERANCE}); ${await checked.innerText()}`);
  assert.ok(worst <= TOLERANCE, `logits differ by up to ${worst}`);

  // A drawn "1": a stroke down the middle of the canvas.
  const box = await page.locator('canvas.draw').boundingBox();
  await page.mouse.move(box.x + 140, box.y + 40);
  await page.mouse.down();
  for (let y = 40; y <= 240; y += 10) await page.mouse.move(box.x + 142, box.y + y);
  await page.mouse.up();
  const bars = page.locator('ol.probabilities li');
  await bars.first().waitFor();
  assert.equal(await bars.count(), 10);
  const p = await bars.evaluateAll((li) => li.map((l) => Number(l.dataset.p)));
  assert.ok(Math.abs(p.reduce((a, b) => a + b) - 1) < 1e-4, `probabilities ${p}`);
  const best = await page.locator('ol.probabilities li.best').getAttribute('data-class');
  console.log(`# try it: a drawn vertical stroke reads as ${best} (p = ${p[Number(best)].toFixed(3)})`);
  assert.equal(best, '1', `a vertical stroke should read as 1: ${p}`);
  await page.screenshot({ path: join(SHOTS, 'try-it.png'), fullPage: true });
  assert.deepEqual(pageErrors, []);
});

/** Submit `spec` and wait until it succeeds. */
async function trained(spec) {
  const job = await json('/api/jobs', { method: 'POST', body: JSON.stringify({ spec }) });
  assert.ok(job.id, JSON.stringify(job));
  for (const end = Date.now() + 180_000; ;) {
    const j = await json(`/api/jobs/${job.id}`);
    if (j.state === 'succeeded') return j;
    assert.ok(!['failed', 'cancelled'].includes(j.state) && Date.now() < end, JSON.stringify(j));
    await new Promise((r) => setTimeout(r, 250));
  }
}

test('Try it takes a typed row for a CSV model, standardised as its training file was', async () => {
  // The class is the sign of y; x sits near 1000, so a row that skipped the training file's
  // standardisation would be dominated by x and read wrong.
  const rows = ['x,y,dir'];
  for (let i = 0; i < 240; i++) {
    const y = (i % 2 ? 1 : -1) * (0.5 + (i % 7) * 0.25);
    rows.push(`${1000 + (i % 11) - 5},${y},${y > 0 ? 'up' : 'down'}`);
  }
  const csv = Buffer.from(rows.join('\n') + '\n');
  const { createHash } = await import('node:crypto');
  const sha = createHash('sha256').update(csv).digest('hex');
  const up = await fetch(`${base}/api/datasets/updown?kind=csv&sha256=${sha}`, {
    method: 'PUT', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/octet-stream' }, body: csv,
  });
  assert.ok(up.ok, await up.text());
  const job = await trained({
    name: 'try-csv', device: 'cpu', seed: 2,
    model: { kind: 'mlp', hidden: [16] },
    dataset: { kind: 'csv', path: 'kiln:updown', label_column: 'dir', validation_fraction: 0.2 },
    optimizer: { kind: 'adam', lr: 0.01 },
    training: { batch_size: 32, epochs: 20, log_every: 10 },
  });
  const data = JSON.parse((await api(`/api/jobs/${job.id}/artifacts/data.json`)).bytes.toString());
  assert.deepEqual(data.columns, ['x', 'y']);
  assert.deepEqual(data.labels, ['down', 'up']);

  const page = await ctx.newPage();
  await page.goto(`${base}/jobs/${job.id}`);
  await page.click('#try-it');
  const x = page.locator('input[data-column="x"]');
  await x.waitFor();
  assert.ok(Math.abs(Number(await x.inputValue()) - 1000) < 1, 'starts at the column mean');
  const predict = async (yValue) => {
    await page.fill('input[data-column="y"]', String(yValue));
    await page.fill('input[data-column="x"]', '1004');
    await page.click('#try-predict-row');
    await page.waitForFunction(() => !document.querySelector('#try-predict-row')?.disabled);
    await page.locator('ol.probabilities li.best').waitFor();
    const p = await page.locator('ol.probabilities li').evaluateAll((li) => li.map((l) => Number(l.dataset.p)));
    return { best: await page.locator('ol.probabilities li.best').getAttribute('data-class'), p };
  };
  const a = await predict(1.5);
  const b = await predict(-1.5);
  console.log(`# try it (CSV): y = 1.5 → ${a.best} (${a.p.map((v) => v.toFixed(3))}), y = -1.5 → ${b.best} (${b.p.map((v) => v.toFixed(3))})`);
  assert.equal(a.best, 'up');
  assert.equal(b.best, 'down');
  assert.ok(Math.max(...a.p) > 0.8 && Math.max(...b.p) > 0.8, 'confident on clear rows');
  // A cell that is not a number is named.
  await page.fill('input[data-column="y"]', 'north');
  await page.click('#try-predict-row');
  await page.locator('p.error', { hasText: 'y: "north" is not a number' }).waitFor({ timeout: 5_000 });
  await page.screenshot({ path: join(SHOTS, 'try-it-csv.png'), fullPage: true });
  assert.deepEqual(pageErrors, []);
  await page.close();
});

test('Try it lets a character language model write from a prompt, in its vocabulary', async () => {
  const job = await trained({
    name: 'try-charlm', device: 'cpu', seed: 5,
    model: { kind: 'charlm', context: 32, d_model: 32, heads: 2, layers: 1 },
    dataset: { kind: 'text', path: 'kiln:kiln-stories', validation_fraction: 0.1 },
    optimizer: { kind: 'adamw', lr: 0.003 },
    training: { batch_size: 16, max_steps: 60, log_every: 20 },
  });
  const data = JSON.parse((await api(`/api/jobs/${job.id}/artifacts/data.json`)).bytes.toString());
  assert.equal(data.task, 'language');
  const vocab = new Set(data.labels);
  const page = await ctx.newPage();
  await page.goto(`${base}/jobs/${job.id}`);
  await page.click('#try-it');
  await page.locator('#try-prompt').waitFor();
  await page.fill('#try-prompt', 'The ');
  await page.fill('#try-temperature', '0.8');
  await page.click('#try-generate');
  const out = page.locator('pre.try-written');
  await page.waitForFunction(() => document.querySelector('pre.try-written')?.dataset.written.length >= 200, null, { timeout: 120_000 });
  await page.waitForFunction(() => document.querySelector('pre.try-written')?.dataset.state === 'idle', null, { timeout: 10_000 });
  const written = await out.getAttribute('data-written');
  console.log(`# try it (charlm): "The " → ${JSON.stringify(written.slice(0, 80))}…`);
  assert.equal([...written].length, 200);
  for (const c of written) assert.ok(vocab.has(c), `${JSON.stringify(c)} is not in the vocabulary`);
  // A character the model never saw is named, and nothing is written.
  await page.fill('#try-prompt', 'The ☃');
  await page.click('#try-generate');
  await page.locator('p.error', { hasText: 'is not in the model\'s vocabulary' }).waitFor({ timeout: 5_000 });
  await page.screenshot({ path: join(SHOTS, 'try-it-charlm.png'), fullPage: true });
  assert.deepEqual(pageErrors, []);
  await page.close();
});
