// Peer figure for BENCHMARKS.md: TensorBoard's time-series page on a 10⁵-step run, loaded in
// the same headless Chromium. TensorBoard draws its charts in a web worker (OffscreenCanvas),
// which the page cannot observe, so this measures a LOWER BOUND: navigation → the scalar data
// has arrived and the chart worker has started.
// Usage: node tensorboard.mjs URL   (a running `tensorboard --logdir …`)
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS } from '../support.mjs';

const url = process.argv[2] ?? 'http://127.0.0.1:6006/';
const REPS = Number(process.env.REPS ?? 7);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
const ready = () => {
  const r = performance.getEntriesByType('resource');
  const data = r.filter((e) => e.name.includes('/timeseries/timeSeries'));
  const worker = r.filter((e) => e.name.includes('chart_worker'));
  if (!data.length || !worker.length || document.querySelectorAll('line-chart canvas').length === 0) return 0;
  return Math.max(...data.map((e) => e.responseEnd), ...worker.map((e) => e.startTime));
};
const measure = async (page) => {
  await page.goto(url);
  await page.waitForFunction(ready, null, { polling: 50, timeout: 60_000 });
  await page.waitForTimeout(500); // later cards may still ask for data
  return page.evaluate(ready);
};
const first = [];
const repeat = [];
for (let i = 0; i < REPS; i++) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  first.push(await measure(page));
  repeat.push(await measure(page));
  await ctx.close();
}
console.log(`tensorboard: data + chart worker ready (lower bound of drawn): first visit median ${median(first).toFixed(1)} ms (max ${Math.max(...first).toFixed(1)}), repeat ${median(repeat).toFixed(1)} ms over ${REPS} runs`);
await browser.close();
