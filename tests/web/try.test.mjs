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
