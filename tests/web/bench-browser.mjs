// Kiln's in-browser benchmark (scripts/bench-browser; not CI): W1 trained in the playground of
// a real `kiln up`, in Debian's headless Chromium, over N fresh page loads per device, beside
// TensorFlow.js on the same workload (tests/web/peers/tfjs, run by the script right after).
//
// W1 = MLP 784→128 (ReLU)→10 on the committed MNIST subset, Adam 1e-3, batch 64, the loss read
// after every step (`log_every = 1`, as the tfjs peer does). Per page load:
//   * samples_per_sec: steps 11..N (the first 10 are warm-up), from the trainer's per-step
//     rates: total samples / total time (the harmonic mean of the rates);
//   * first_step_ms: navigation start → the first step's metric on the page (includes loading
//     the dashboard and the trainer module, fetching the data, the form filled in by the script);
//   * infer_ms: one image through the final model of a W1 job ("Try it" on its job page, the
//     trainer's CPU module), the model's own time, median of 10 drawings after 1.
// Also: the trainer modules' gzipped sizes as served.
// Env: KILN_BENCH_RUNS (5) KILN_BENCH_STEPS (210) KILN_BENCH_WEBGPU_STEPS (40) KILN_BENCH_DEVICES
// (cpu,webgpu). Prints one JSON object per measurement; writes tests/web/bench-browser.json.
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, ROOT, signIn, TOKEN, startKiln } from './support.mjs';

const RUNS = Number(process.env.KILN_BENCH_RUNS ?? 5);
const STEPS = Number(process.env.KILN_BENCH_STEPS ?? 210);
const WEBGPU_STEPS = Number(process.env.KILN_BENCH_WEBGPU_STEPS ?? 40);
const DEVICES = (process.env.KILN_BENCH_DEVICES ?? 'cpu,webgpu').split(',');
const WARMUP = 10;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};

const dir = mkdtempSync(join(tmpdir(), 'kiln-bench-browser-'));
const { child, url } = await startKiln(dir);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: [...CHROMIUM_ARGS, '--enable-unsafe-webgpu'],
});
const results = { date: new Date().toISOString(), chromium: browser.version(), runs: RUNS, devices: {} };

async function trainOnce(device, steps) {
  const ctx = await browser.newContext();
  await ctx.addInitScript(signIn, TOKEN);
  const page = await ctx.newPage();
  const load = loadavg()[0];
  await page.goto(`${url}/play?preset=mnist-mlp`);
  await page.selectOption('#play-device', device);
  await page.fill('#f-training-max_steps', String(steps));
  await page.fill('#f-training-log_every', '1');
  await page.fill('#f-training-epochs', '10');
  await page.click('button[type=submit]');
  await page.waitForFunction(
    () => ['done', 'failed'].includes(document.querySelector('.play-status')?.dataset.state),
    null, { timeout: 900_000 });
  const state = await page.locator('.play-status').getAttribute('data-state');
  if (state !== 'done') throw new Error(await page.locator('.play-status').innerText());
  const section = page.locator('section.play');
  const rates = (await section.getAttribute('data-train-rates')).split(',').map(Number);
  const losses = (await section.getAttribute('data-train-losses')).split(',').map(Number);
  const timed = rates.slice(WARMUP);
  const seconds = timed.reduce((a, r) => a + 64 / r, 0);
  const run = {
    samples_per_sec: (timed.length * 64) / seconds,
    first_step_ms: Number(await section.getAttribute('data-first-metric-ms')),
    loss_first: losses.slice(0, 10).reduce((a, b) => a + b) / 10,
    loss_last: losses.slice(-10).reduce((a, b) => a + b) / 10,
    device: (await page.locator('.play-device').innerText()).replace(/^Device: /, ''),
    load_start: load,
    load_end: loadavg()[0],
  };
  await ctx.close();
  return run;
}

for (const device of DEVICES) {
  const steps = device === 'webgpu' ? WEBGPU_STEPS : STEPS;
  await trainOnce(device, 12).catch(() => {}); // one discarded load: the browser warms up
  const runs = [];
  for (let i = 0; i < RUNS; i++) {
    const r = await trainOnce(device, steps);
    console.error(`kiln ${device} run ${i + 1}: ${r.samples_per_sec.toFixed(0)} samples/s, first step ${r.first_step_ms.toFixed(0)} ms, loss ${r.loss_first.toFixed(3)} → ${r.loss_last.toFixed(3)} (${r.device})`);
    runs.push(r);
  }
  results.devices[device] = {
    steps,
    median: {
      samples_per_sec: median(runs.map((r) => r.samples_per_sec)),
      first_step_ms: median(runs.map((r) => r.first_step_ms)),
    },
    runs,
  };
  console.log(JSON.stringify({ device, steps, ...results.devices[device].median }));
}

// Inference: a W1 job trained by the local worker, run in the page through "Try it".
{
  const res = await fetch(`${url}/api/jobs`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ spec: {
      name: 'bench-infer', device: 'cpu', model: { kind: 'mlp', hidden: [128] },
      dataset: { kind: 'idx', path: 'kiln:mnist-subset' },
      optimizer: { kind: 'adam', lr: 0.001 }, training: { batch_size: 64, epochs: 1 },
    } }),
  });
  const job = await res.json();
  for (;;) {
    const j = await (await fetch(`${url}/api/jobs/${job.id}`, { headers: { authorization: `Bearer ${TOKEN}` } })).json();
    if (j.state === 'succeeded') break;
    if (['failed', 'cancelled'].includes(j.state)) throw new Error(JSON.stringify(j));
    await new Promise((r) => setTimeout(r, 200));
  }
  const ctx = await browser.newContext();
  await ctx.addInitScript(signIn, TOKEN);
  const page = await ctx.newPage();
  await page.goto(`${url}/jobs/${job.id}`);
  await page.click('#try-it');
  const canvas = page.locator('canvas.draw');
  await canvas.waitFor();
  const times = [];
  for (let i = 0; i < 11; i++) {
    // Clear empties the probabilities and the time, so the next one read is this drawing's;
    // clicking it may scroll the page, so the canvas is found again each time.
    await page.getByRole('button', { name: 'Clear' }).click();
    await canvas.scrollIntoViewIfNeeded();
    const box = await canvas.boundingBox();
    await page.mouse.move(box.x + 140, box.y + 40);
    await page.mouse.down();
    for (let y = 40; y <= 240; y += 20) await page.mouse.move(box.x + 140 + (i % 3), box.y + y);
    await page.mouse.up();
    const line = page.locator('.try-digit p', { hasText: 'ms in the model' });
    await line.waitFor();
    const text = await line.innerText();
    times.push(Number(text.match(/([\d.]+) ms/)[1]));
  }
  results.infer_ms = median(times.slice(1));
  console.log(JSON.stringify({ infer_ms: results.infer_ms, samples: times }));
  await ctx.close();
}

results.module_gzip_bytes = Object.fromEntries(['cpu', 'webgpu'].map((k) => [k,
  statSync(join(ROOT, `web/dist/trainer/kiln_trainer_${k}_bg.wasm.gz`)).size
  + statSync(join(ROOT, `web/dist/trainer/kiln_trainer_${k}.js.gz`)).size]));
results.dashboard_gzip_bytes = statSync(join(ROOT, 'web/dist/pkg/kiln_web_bg.wasm.gz')).size;
console.log(JSON.stringify({ module_gzip_bytes: results.module_gzip_bytes, dashboard_gzip_bytes: results.dashboard_gzip_bytes }));
writeFileSync(join(ROOT, 'tests/web/bench-browser.json'), JSON.stringify(results, null, 1));
await browser.close();
child.kill('SIGTERM');
rmSync(dir, { recursive: true, force: true });
