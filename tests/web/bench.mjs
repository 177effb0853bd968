// Dashboard benchmarks (scripts/bench-web), against a real `kiln up` in headless Chromium:
//   1. bundle size: web/dist's wasm + JS, gzipped
//   2. time until a job page with 10⁵ metric points is drawn (all four charts), first visit
//      (fresh browser context: wasm fetched and compiled) and repeat visits
//   3. delay from a worker's metric to the browser drawing it: a load generator in a second
//      tab speaks the real worker protocol on /ws/worker and stamps each metric as it sends
//      it; the job page records when that step is drawn (same browser, same clock)
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, signIn, ROOT, TOKEN, startKiln } from './support.mjs';

const REPS = Number(process.env.REPS ?? 7);
const LATENCY_POINTS = Number(process.env.LATENCY_POINTS ?? 500);

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.ceil(p / 100 * s.length) - 1)]; };
const fmt = (x) => x.toFixed(1);

async function api(base, path, init = {}) {
  const res = await fetch(base + path, { ...init, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' } });
  return res.json();
}

// 1. Bundle size.
const dist = join(ROOT, 'web/dist/pkg');
const wasm = readFileSync(join(dist, 'kiln_web_bg.wasm'));
const js = readFileSync(join(dist, 'kiln_web.js'));
const css = readFileSync(join(ROOT, 'web/dist/style.css'));
const gz = (b) => gzipSync(b, { level: 9 }).length;
console.log(`bundle: wasm ${wasm.length} B (${gz(wasm)} B gzipped), js ${js.length} B (${gz(js)} B gz), css ${gz(css)} B gz; total gzipped ${gz(wasm) + gz(js) + gz(css)} B`);

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });

// 2. A real run with 10⁵ metric points: a tiny MLP logging every step.
{
  const dir = mkdtempSync(join(tmpdir(), 'kiln-bench-web-'));
  const { child, url } = await startKiln(dir);
  const spec = {
    name: 'bench-100k-points', device: 'cpu',
    model: { kind: 'mlp', hidden: [8] },
    dataset: { kind: 'synthetic', examples: 8000, features: 8, classes: 2, validation_fraction: 0 },
    training: { batch_size: 8, epochs: 100, max_steps: 100000, log_every: 1, eval_every: 25000 },
  };
  const job = await api(url, '/api/jobs', { method: 'POST', body: JSON.stringify({ spec }) });
  const t0 = Date.now();
  for (;;) {
    const j = await api(url, `/api/jobs/${job.id}`);
    if (j.state === 'succeeded') break;
    if (j.state === 'failed' || j.state === 'cancelled') throw new Error(j.error);
    await new Promise((r) => setTimeout(r, 500));
  }
  const all = await api(url, `/api/jobs/${job.id}/metrics?max_points=100000`);
  console.log(`run with ${all.length} metric points trained in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const drawn = () => [...document.querySelectorAll('.charts canvas')].length === 4
    && [...document.querySelectorAll('.chart-loss canvas, .chart-lr canvas')].every((c) => Number(c.dataset.points) > 0);
  const measure = async (page) => {
    await page.goto(`${url}/jobs/${job.id}`);
    await page.waitForFunction(drawn, null, { polling: 'raf', timeout: 30_000 });
    return page.evaluate(() => performance.now());
  };
  const first = [];
  const repeat = [];
  for (let i = 0; i < REPS; i++) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await ctx.addInitScript(signIn, TOKEN);
    const page = await ctx.newPage();
    first.push(await measure(page));
    repeat.push(await measure(page));
    await ctx.close();
  }
  console.log(`job page with ${all.length} points drawn: first visit median ${fmt(median(first))} ms (max ${fmt(Math.max(...first))}), repeat visit median ${fmt(median(repeat))} ms (max ${fmt(Math.max(...repeat))}) over ${REPS} runs`);
  child.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}

// 3. Worker metric → browser.
{
  const dir = mkdtempSync(join(tmpdir(), 'kiln-bench-web-'));
  const { child, url } = await startKiln(dir, ['--no-worker']);
  const spec = { name: 'bench-latency', device: 'cpu', model: { kind: 'mlp' }, dataset: { kind: 'synthetic' } };
  const job = await api(url, '/api/jobs', { method: 'POST', body: JSON.stringify({ spec }) });
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await ctx.addInitScript(signIn, TOKEN);
  const worker = await ctx.newPage();
  await worker.goto(`${url}/login`);
  // The load generator: Hello → Assign → Started, then one metric every 20 ms.
  await worker.evaluate(([token, jobId]) => new Promise((resolve, reject) => {
    const ws = new WebSocket(`${location.origin.replace('http', 'ws')}/ws/worker?access_token=${token}`);
    window.benchWs = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: 'hello', protocol_version: 1, worker_id: 'bench-load', name: 'bench-load',
      capabilities: { devices: ['cpu'], device_names: ['load generator'], memory_mb: 1024, cores: 1, kiln_version: '0.1.0' } }));
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === 'assign' && msg.job_id === jobId) {
        window.benchAttempt = msg.attempt;
        ws.send(JSON.stringify({ type: 'started', job_id: jobId, attempt: msg.attempt, device: 'cpu', total_steps: 1000000, start_step: 0 }));
        setInterval(() => ws.send(JSON.stringify({ type: 'heartbeat', running: [{ job_id: jobId, attempt: msg.attempt }] })), 1000);
        resolve();
      }
    };
    ws.onerror = () => reject(new Error('worker socket failed'));
    setTimeout(() => reject(new Error('no assignment')), 20000);
  }), [TOKEN, job.id]);
  const dash = await ctx.newPage();
  await dash.goto(`${url}/jobs/${job.id}`);
  await dash.locator('.chart-loss canvas').waitFor();
  await dash.waitForTimeout(1000);
  await dash.evaluate(() => {
    window.seen = {};
    const canvas = document.querySelector('.chart-loss canvas');
    new MutationObserver(() => {
      const t = performance.timeOrigin + performance.now();
      const step = Number(canvas.dataset.lastStep);
      if (!(step in window.seen)) window.seen[step] = t;
    }).observe(canvas, { attributes: true, attributeFilter: ['data-last-step'] });
  });
  const sent = await worker.evaluate(([jobId, n]) => new Promise((resolve) => {
    const sent = {};
    let step = 1000;
    const timer = setInterval(() => {
      step += 1;
      sent[step] = performance.timeOrigin + performance.now();
      window.benchWs.send(JSON.stringify({ type: 'metrics', job_id: jobId, attempt: window.benchAttempt,
        points: [{ step, epoch: 0, split: 'train', loss: 1 / step, lr: 0.001 }] }));
      if (step >= 1000 + n) { clearInterval(timer); setTimeout(() => resolve(sent), 1000); }
    }, 20);
  }), [job.id, LATENCY_POINTS]);
  const seen = await dash.evaluate(() => window.seen);
  const delays = Object.entries(sent).filter(([s]) => s in seen).map(([s, t]) => seen[s] - t);
  console.log(`worker metric → browser chart: ${delays.length}/${Object.keys(sent).length} points seen; p50 ${fmt(pct(delays, 50))} ms, p99 ${fmt(pct(delays, 99))} ms, max ${fmt(Math.max(...delays))} ms`);
  await ctx.close();
  child.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
await browser.close();
